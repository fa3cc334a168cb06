"""Regression tests: ReplicaStrategy has none of stock CentralStorageStrategy's Keras 3 defects.

`tf.distribute.experimental.CentralStorageStrategy` (the same parameter-server design) has these
defects with Keras 3, one per test class below: it refuses the NONE-aggregated variables Keras
layers write from replica context, counts some metric samples several times, cannot reduce nested
structures, drops the last partial step of `distribute_datasets_from_function`, and raises on
`InputOptions`. Each test shows ReplicaStrategy does not have one; where it is cheap, a companion
test shows CentralStorageStrategy on the same devices does, which proves the test can see the
defect.
"""

import functools

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorflow.python.distribute import device_util

import replica_strategy
from replica_strategy import strategies

_FEATURES = 4
_REPLICA_AGGREGATION_ERROR = (
    "You must specify an aggregation method to update a AggregatingVariable"
)
_MULTI_REPLICA_COUNTS = (("two_replicas", 2), ("four_replicas", 4))


def _replica_strategy(num_replicas):
    return replica_strategy.ReplicaStrategy(virtual_devices.cpus(num_replicas))


@functools.cache
def _mirrored_strategy():
    """MirroredStrategy on two CPUs, shared by the tests, with collective keys of its own."""
    return strategies.make_strategy("mirrored", virtual_devices.cpus(2))


def _central_storage_strategy(num_replicas):
    return tf.distribute.experimental.CentralStorageStrategy(virtual_devices.cpus(num_replicas))


def _data(rows, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, _FEATURES)).astype("float32")
    targets = (features @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")).astype("float32")
    return features, targets


def _model(*hidden_layers, metrics=()):
    """A tiny regression model; the same seed gives the same initial weights every time."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((_FEATURES,)), keras.layers.Dense(3), *hidden_layers, keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse", metrics=list(metrics))
    return model


def _fit_two_steps(strategy, layer_kind):
    """Builds a model with `layer_kind` in `strategy.scope()` and fits 2 steps of 8 rows.

    Args:
      strategy: the strategy to build and train under.
      layer_kind: "batch_normalization", "dropout" or "mixed_float16".

    Returns:
      The trained model and the per-epoch loss history.
    """
    features, targets = _data(16)
    if layer_kind == "mixed_float16":
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            # Layers are made in the scope: Dropout creates its SeedGenerator state right away.
            model = _model(*_hidden_layers(layer_kind))
        history = model.fit(features, targets, batch_size=8, epochs=1, shuffle=False, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, history.history["loss"]


def _hidden_layers(layer_kind):
    if layer_kind == "batch_normalization":
        return [keras.layers.BatchNormalization()]
    if layer_kind == "dropout":
        return [keras.layers.Dropout(0.5, seed=1)]
    return []


class ReplicaWritesInKerasLayersTest(tf.test.TestCase, parameterized.TestCase):
    """Keras 3 layers write NONE-aggregated variables from replica context; CSS refuses them."""

    def tearDown(self):
        keras.mixed_precision.set_global_policy("float32")
        super().tearDown()

    @parameterized.named_parameters(
        ("batch_normalization", "batch_normalization"), ("dropout", "dropout")
    )
    def test_fit_on_two_replicas(self, layer_kind):
        model, losses = _fit_two_steps(_replica_strategy(2), layer_kind)
        self.assertTrue(np.all(np.isfinite(losses)))
        self.assertEqual(int(model.optimizer.iterations.numpy()), 2)

    @parameterized.named_parameters(
        ("batch_normalization", "batch_normalization"), ("dropout", "dropout")
    )
    def test_fit_matches_mirrored(self, layer_kind):
        # Replica 0's write of a NONE-aggregated variable (moving statistics, seed state), once
        # per step, is what MirroredStrategy's primary copy (the one it reads and saves) holds.
        ours, _ = _fit_two_steps(_replica_strategy(2), layer_kind)
        mirrored, _ = _fit_two_steps(_mirrored_strategy(), layer_kind)
        self.assertEqual(
            [variable.shape for variable in ours.variables],
            [variable.shape for variable in mirrored.variables],
        )
        for our_variable, mirrored_variable in zip(ours.variables, mirrored.variables, strict=True):
            self.assertAllClose(our_variable.numpy(), mirrored_variable.numpy(), atol=1e-5)

    def test_fit_mixed_float16_matches_mirrored(self):
        # The loss-scale state (dynamic scale, step counter, iterations: a step with non-finite
        # float16 gradients is skipped) and the weights match MirroredStrategy's.
        ours, losses = _fit_two_steps(_replica_strategy(2), "mixed_float16")
        mirrored, _ = _fit_two_steps(_mirrored_strategy(), "mixed_float16")
        self.assertTrue(np.all(np.isfinite(losses)))
        self.assertAllClose(
            [variable.numpy() for variable in ours.variables + ours.optimizer.variables],
            [variable.numpy() for variable in mirrored.variables + mirrored.optimizer.variables],
            atol=1e-3,
        )

    @parameterized.named_parameters(
        ("batch_normalization", "batch_normalization"),
        ("dropout", "dropout"),
        ("mixed_float16", "mixed_float16"),
    )
    def test_central_storage_fit_fails(self, layer_kind):
        with self.assertRaisesRegex(ValueError, _REPLICA_AGGREGATION_ERROR):
            _fit_two_steps(_central_storage_strategy(2), layer_kind)


def _evaluate_with_metrics(strategy):
    """Evaluates a fixed model on 12 rows in batches of 4.

    Returns:
      (the metric results, {metric variable path: value}).
    """
    features, targets = _data(12)
    with strategy.scope():
        model = _model(metrics=["mae", keras.metrics.MeanSquaredError(name="mean_squared")])
    results = model.evaluate(features, targets, batch_size=4, verbose=0, return_dict=True)
    variables = {
        variable.path: float(variable.numpy())
        for metric in model.metrics
        for variable in metric.variables
    }
    return results, variables


class MetricCountTest(tf.test.TestCase, parameterized.TestCase):
    """Keras 3 metrics count every sample once (CSS counts some of them several times)."""

    @parameterized.named_parameters(*_MULTI_REPLICA_COUNTS)
    def test_evaluate_matches_no_strategy(self, num_replicas):
        expected, _ = _evaluate_with_metrics(tf.distribute.get_strategy())
        results, variables = _evaluate_with_metrics(_replica_strategy(num_replicas))
        self.assertAllClose(results, expected, atol=1e-5)
        counts = {path: value for path, value in variables.items() if path.endswith("/count")}
        self.assertLen(counts, 3)  # loss, mae, mean_squared
        self.assertEqual(set(counts.values()), {12.0})

    @parameterized.named_parameters(*_MULTI_REPLICA_COUNTS)
    def test_central_storage_over_counts(self, num_replicas):
        _, variables = _evaluate_with_metrics(_central_storage_strategy(num_replicas))
        self.assertGreater(variables["mean_absolute_error/count"], 12.0)

    @parameterized.named_parameters(*_MULTI_REPLICA_COUNTS)
    def test_mean_metric_counts_each_sample_once(self, num_replicas):
        # 10 values 0..9 in batches of 4 (the last one partial): count 10, total 45.
        mean = _mean_over_distributed_range(_replica_strategy(num_replicas), 10)
        self.assertEqual(float(mean.count.numpy()), 10.0)
        self.assertEqual(float(mean.total.numpy()), 45.0)
        self.assertAllClose(mean.result(), 4.5)

    def test_central_storage_mean_metric_over_counts(self):
        mean = _mean_over_distributed_range(_central_storage_strategy(2), 10)
        self.assertNotEqual(float(mean.count.numpy()), 10.0)


def _mean_over_distributed_range(strategy, size):
    """A `keras.metrics.Mean` updated from replica context with 0..size-1, batches of 4."""
    with strategy.scope():
        mean = keras.metrics.Mean()

    @tf.function
    def update(batch):
        strategy.run(mean.update_state, args=(batch,))

    dataset = tf.data.Dataset.range(size).map(lambda value: tf.cast(value, tf.float32)).batch(4)
    for batch in strategy.experimental_distribute_dataset(dataset):
        update(batch)
    return mean


def _per_replica_structure(strategy):
    """Replica r holds {"scalar": r + 1, "pair": (10 r, [r, r])}."""

    def replica_fn():
        replica_context = tf.distribute.get_replica_context()
        replica_id = tf.cast(replica_context.replica_id_in_sync_group, tf.float32)
        return {"scalar": replica_id + 1.0, "pair": (10.0 * replica_id, tf.fill([2], replica_id))}

    return strategy.run(replica_fn)


def _as_lists(structure):
    return tf.nest.map_structure(lambda tensor: tensor.numpy().tolist(), structure)


class NestedReduceTest(tf.test.TestCase, parameterized.TestCase):
    """`strategy.reduce` walks nested structures (CSS: SUM raises, MEAN returns replica 0)."""

    @parameterized.named_parameters(*_MULTI_REPLICA_COUNTS)
    def test_sum_of_a_dict(self, num_replicas):
        strategy = _replica_strategy(num_replicas)
        total = num_replicas * (num_replicas - 1) / 2  # Sum of replica ids.
        reduced = strategy.reduce("SUM", _per_replica_structure(strategy), axis=None)
        expected = {"scalar": total + num_replicas, "pair": (10.0 * total, [total, total])}
        self.assertEqual(_as_lists(reduced), expected)

    @parameterized.named_parameters(*_MULTI_REPLICA_COUNTS)
    def test_mean_of_a_dict(self, num_replicas):
        strategy = _replica_strategy(num_replicas)
        mean = (num_replicas - 1) / 2  # Mean of replica ids.
        reduced = strategy.reduce("MEAN", _per_replica_structure(strategy), axis=None)
        expected = {"scalar": mean + 1.0, "pair": (10.0 * mean, [mean, mean])}
        self.assertAllClose(_as_lists(reduced), expected)

    def test_central_storage_sum_of_a_dict_raises(self):
        strategy = _central_storage_strategy(2)
        with self.assertRaisesRegex(ValueError, "non-DistributedValues"):
            strategy.reduce("SUM", _per_replica_structure(strategy), axis=None)

    def test_central_storage_mean_of_a_dict_returns_replica_zero(self):
        strategy = _central_storage_strategy(2)
        reduced = strategy.reduce("MEAN", _per_replica_structure(strategy), axis=None)
        self.assertEqual(_as_lists(reduced), {"scalar": 1.0, "pair": (0.0, [0.0, 0.0])})


def _elements_from_function(strategy, size, rows_per_replica):
    """Every element `distribute_datasets_from_function` yields for `Dataset.range(size)`."""

    def dataset_fn(input_context):
        global_batch_size = rows_per_replica * input_context.num_replicas_in_sync
        per_replica_batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        return tf.data.Dataset.range(size).batch(per_replica_batch_size)

    elements = []
    for batch in strategy.distribute_datasets_from_function(dataset_fn):
        for replica_batch in strategy.experimental_local_results(batch):
            elements.extend(replica_batch.numpy().tolist())
    return elements


class LastPartialStepTest(tf.test.TestCase, parameterized.TestCase):
    """`distribute_datasets_from_function` keeps the last partial step."""

    @parameterized.named_parameters(
        ("seven_by_two", 7, 2), ("seven_by_one", 7, 1), ("five_by_two", 5, 2)
    )
    def test_every_element_once_on_two_replicas(self, size, rows_per_replica):
        elements = _elements_from_function(_replica_strategy(2), size, rows_per_replica)
        self.assertLen(elements, size)
        self.assertEqual(set(elements), set(range(size)))

    # 7 by 2 is not here: its last step still gives both replicas a batch, so CSS keeps it.
    @parameterized.named_parameters(("seven_by_one", 7, 1), ("five_by_two", 5, 2))
    def test_central_storage_drops_the_last_step(self, size, rows_per_replica):
        # The last step has a batch for replica 0 only, and CSS drops that whole step.
        elements = _elements_from_function(_central_storage_strategy(2), size, rows_per_replica)
        self.assertLess(len(elements), size)


class InputOptionsTest(tf.test.TestCase, parameterized.TestCase):
    """`InputOptions` are honoured (CSS raises on its `experimental_replication_moden` typo)."""

    @parameterized.named_parameters(("to_device", True), ("on_host", False))
    def test_distribute_dataset_with_options(self, fetch_to_device):
        # Replicas on CPU:2 and CPU:3, so "on the host" (CPU:0) differs from "on the device".
        strategy = replica_strategy.ReplicaStrategy(["/cpu:2", "/cpu:3"])
        options = tf.distribute.InputOptions(experimental_fetch_to_device=fetch_to_device)
        dataset = tf.data.Dataset.range(8).batch(4)
        batch = next(iter(strategy.experimental_distribute_dataset(dataset, options=options)))
        local_batches = strategy.experimental_local_results(batch)
        self.assertEqual([local.numpy().tolist() for local in local_batches], [[0, 1], [2, 3]])
        self.assertEqual(
            [local.device for local in local_batches],
            _expected_input_devices(strategy, fetch_to_device),
        )

    @parameterized.named_parameters(("to_device", True), ("on_host", False))
    def test_distribute_datasets_from_function_with_options(self, fetch_to_device):
        strategy = replica_strategy.ReplicaStrategy(["/cpu:2", "/cpu:3"])
        options = tf.distribute.InputOptions(experimental_fetch_to_device=fetch_to_device)
        datasets = strategy.distribute_datasets_from_function(
            lambda _: tf.data.Dataset.range(8).batch(2), options=options
        )
        local_batches = strategy.experimental_local_results(next(iter(datasets)))
        self.assertEqual(
            [local.device for local in local_batches],
            _expected_input_devices(strategy, fetch_to_device),
        )

    @parameterized.named_parameters(("to_device", True), ("on_host", False))
    def test_central_storage_raises_on_options(self, fetch_to_device):
        strategy = tf.distribute.experimental.CentralStorageStrategy(["/cpu:2", "/cpu:3"])
        options = tf.distribute.InputOptions(experimental_fetch_to_device=fetch_to_device)
        with self.assertRaisesRegex(AttributeError, "experimental_replication_moden"):
            strategy.experimental_distribute_dataset(tf.data.Dataset.range(8), options=options)


def _expected_input_devices(strategy, fetch_to_device):
    if fetch_to_device:
        return list(strategy.extended.worker_devices)
    return [device_util.canonicalize("/cpu:0")] * strategy.num_replicas_in_sync


class UnevenFirstBatchTest(tf.test.TestCase):
    """Keras 3 builds with `strategy.reduce("MEAN", first_batch, axis=None)`."""

    def _fit_uneven_first_batch(self, strategy):
        # Batches of 5 on 2 replicas split 3 + 2: the first batch Keras reduces is uneven.
        features, targets = _data(10)
        with strategy.scope():
            model = _model()
        self.assertFalse(model.optimizer.built)
        return model.fit(features, targets, batch_size=5, epochs=1, verbose=0).history["loss"]

    def test_fit_with_an_uneven_first_batch(self):
        losses = self._fit_uneven_first_batch(_replica_strategy(2))
        self.assertTrue(np.all(np.isfinite(losses)))

    def test_mirrored_fit_with_an_uneven_first_batch_crashes(self):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "AddN"):
            self._fit_uneven_first_batch(_mirrored_strategy())


if __name__ == "__main__":
    tf.test.main()
