"""`ReplicaStrategy(mirror_weights=True)`: master weights once on the host, copies on replicas.

Runs on logical CPUs: the host (parameter device) is /cpu:0, the replicas /cpu:1 .. /cpu:N.
Oracles: one device, and the same strategy with `mirror_weights=False`. What every placement
must pass (TF's conformance bases, the strategy contract, Keras 3, tf_keras and the upstream
tests) runs in the "mirror_weights" placement of tests/placements.py; this file keeps what is
particular to the working copies.
"""

import os
import subprocess
import sys
import textwrap

import virtual_devices

# isort: split

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging
from absl.testing import parameterized
from tensorflow.python.distribute import cross_device_ops as cross_device_ops_lib
from tensorflow.python.distribute import values as values_lib

from replica_strategy import ReplicaStrategy, exact_uneven_batches
from replica_strategy import _device_all_reduce as device_all_reduce
from replica_strategy._mirrored_weights import MirroredWeight
from replica_strategy._variables import ParameterVariable

_HOST = "/cpu:0"
_FEATURES = 3
_REPLICA_COUNTS = (
    ("one_replica", 1),
    ("two_replicas", 2),
    ("three_replicas", 3),
    ("four_replicas", 4),
)


def _replica_devices(num_replicas):
    return [f"/cpu:{index}" for index in range(1, num_replicas + 1)]


def _strategy(num_replicas, mirror_weights=True):
    return ReplicaStrategy(
        _replica_devices(num_replicas), parameter_device=_HOST, mirror_weights=mirror_weights
    )


def _data(rows=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1).astype("float32")
    return x, y


def _mlp(*extra_layers, optimizer=None, steps_per_execution=1):
    """A small regression model with fixed initial weights (same seed => same weights)."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((_FEATURES,)),
            keras.layers.Dense(6, activation="tanh"),
            *extra_layers,
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.02),
        loss="mse",
        metrics=["mae"],
        steps_per_execution=steps_per_execution,
    )
    return model


def _in_scope(strategy, build, *args, **kwargs):
    if strategy is None:
        return build(*args, **kwargs)
    with strategy.scope():
        return build(*args, **kwargs)


def _fit(strategy, build, x, y, batch_size, epochs=2, exact=False, **kwargs):
    model = _in_scope(strategy, build, **kwargs)
    if exact:
        exact_uneven_batches(model)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model


def _max_difference(first, second):
    return max(
        float(np.abs(a - b).max())
        for a, b in zip(first.get_weights(), second.get_weights(), strict=True)
    )


def _devices_running(graph, op_type):
    """The devices ("CPU:1") of the ops of `op_type` in `graph`."""
    return {
        operation.device.rsplit("device:", 1)[-1]
        for operation in graph.get_operations()
        if operation.type == op_type
    }


class _TestCase(tf.test.TestCase, parameterized.TestCase):
    def assertWeightsClose(self, model, reference, atol=1e-5):
        difference = _max_difference(model, reference)
        logging.info("%s: max weight difference %.3g", self.id(), difference)
        self.assertLess(difference, atol)
        self.assertCopiesEqualMasters(model)

    def assertCopiesEqualMasters(self, model):
        for variable in model.trainable_variables:
            self.assertCopiesEqualMaster(_tf_variable(variable))

    def assertCopiesEqualMaster(self, weight):
        self.assertIsInstance(weight, MirroredWeight)
        master = weight.master.numpy()
        for copy in weight.values:
            self.assertAllEqual(copy.numpy(), master)


class ConstructionTest(_TestCase):
    def test_repr_shows_mirror_weights(self):
        self.assertEndsWith(repr(_strategy(2)), "mirror_weights=True)")
        self.assertNotIn("mirror_weights", repr(_strategy(2, mirror_weights=False)))

    def test_rejects_a_non_bool(self):
        with self.assertRaisesRegex(ValueError, "Received: mirror_weights='yes'"):
            ReplicaStrategy(_replica_devices(2), mirror_weights="yes")


class DeviceAllReduceTest(_TestCase):
    """The all-reduce among replica devices: MirroredStrategy's local choice."""

    def test_nccl_when_every_replica_device_is_a_gpu(self):
        chosen = device_all_reduce.choose(["/gpu:0", "/gpu:1"], nccl_available=True)
        self.assertIsInstance(chosen, cross_device_ops_lib.NcclAllReduce)

    @parameterized.named_parameters(
        ("gpus_without_nccl", ["/gpu:0", "/gpu:1"], False),
        ("a_cpu_among_gpus", ["/gpu:1", "/cpu:0"], True),
        ("cpus", ["/cpu:1", "/cpu:2", "/cpu:3"], True),
        ("one_gpu", ["/device:GPU:3"], False),
    )
    def test_reduction_onto_the_first_replica_device_otherwise(self, devices, nccl_available):
        chosen = device_all_reduce.choose(devices, nccl_available=nccl_available)
        self.assertIsInstance(chosen, cross_device_ops_lib.ReductionToOneDevice)
        self.assertEqual(chosen.reduce_to_device, devices[0])

    def test_this_machine_reduces_onto_the_first_replica_device(self):
        # Replicas on CPUs: no NCCL; the strategy reduces on /cpu:1, not on the host.
        chosen = _strategy(3).extended._replica_all_reduce  # pylint: disable=protected-access
        self.assertIsInstance(chosen, cross_device_ops_lib.ReductionToOneDevice)
        self.assertIn("CPU:1", chosen.reduce_to_device)


class PlacementTest(_TestCase):
    def _build(self, strategy):
        with strategy.scope():
            model = _mlp(keras.layers.BatchNormalization())
            model.optimizer.build(model.trainable_variables)
            metric = keras.metrics.Mean()
        return model, metric

    def test_masters_on_the_host_copies_on_the_replicas_slots_once(self):
        strategy = _strategy(3)
        model, metric = self._build(strategy)
        host = tf.DeviceSpec.from_string(_HOST)
        for variable in model.trainable_variables:
            weight = variable.value
            self.assertIsInstance(weight, MirroredWeight)
            self.assertEqual(tf.DeviceSpec.from_string(weight.master.device).device_index, 0)
            self.assertEqual(
                [tf.DeviceSpec.from_string(copy.device).device_index for copy in weight.values],
                [1, 2, 3],
            )
            # Per-replica values, as for MirroredStrategy's variables: the working copies.
            self.assertEqual(strategy.experimental_local_results(weight), weight.values)
        # Adam's moments and counters: one plain copy each, on the host, none on a replica.
        for variable in model.optimizer.variables:
            self.assertNotIsInstance(variable.value, values_lib.DistributedVariable)
            self.assertEqual(
                tf.DeviceSpec.from_string(variable.value.device).device_index, host.device_index
            )
        # Non-trainable variables and metrics: as with mirror_weights=False.
        for variable in model.non_trainable_variables:
            self.assertIsInstance(variable.value, ParameterVariable)
        for variable in metric.variables:
            self.assertIsInstance(variable.value, values_lib.SyncOnReadVariable)

    def test_a_replica_on_the_host_uses_the_master_as_its_copy(self):
        strategy = ReplicaStrategy(
            ["/cpu:0", "/cpu:1"], parameter_device=_HOST, mirror_weights=True
        )
        model, _ = self._build(strategy)
        weight = model.trainable_variables[0].value
        self.assertIs(weight.values[0], weight.master)
        self.assertIsNot(weight.values[1], weight.master)

    @parameterized.named_parameters(("mirror_weights", True, "CPU:1"), ("default", False, "CPU:0"))
    def test_gradients_are_summed_among_the_replica_devices(self, mirror_weights, summed_on):
        # The step's only sums are the gradients' (AddN); the update runs on the host.
        strategy = _strategy(3, mirror_weights)
        with strategy.scope():
            model = _mlp()
            optimizer = model.optimizer
            optimizer.build(model.trainable_variables)

        @tf.function
        def step(x, y):
            def replica_step(x, y):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.square(model(x) - y))
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))

            strategy.run(replica_step, args=(x, y))

        x, y = _data(6)
        graph = step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
        self.assertEqual(_devices_running(graph, "AddN"), {summed_on})
        self.assertEqual(_devices_running(graph, "Sqrt"), {"CPU:0"})  # Adam's update, on the host.


class ReplicaWritesTest(_TestCase):
    """Writes to trainable variables, from replicas and across them: as mirror_weights=False."""

    @parameterized.named_parameters(
        ("none", tf.VariableAggregation.NONE),
        ("only_first_replica", tf.VariableAggregation.ONLY_FIRST_REPLICA),
        ("sum", tf.VariableAggregation.SUM),
        ("mean", tf.VariableAggregation.MEAN),
    )
    def test_replica_context_writes_match_the_default_mode(self, aggregation):
        results = []
        for mirror_weights in (False, True):
            strategy = _strategy(3, mirror_weights)
            with strategy.scope():
                variable = tf.Variable([1.0, 2.0], aggregation=aggregation)

            @tf.function
            def step(strategy=strategy, variable=variable):
                def write():
                    replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
                    value = tf.cast(replica_id + 1, tf.float32) * tf.constant([1.0, 10.0])
                    variable.assign_add(value)
                    variable.assign_sub(value / 2)
                    return variable.read_value()

                return strategy.experimental_local_results(strategy.run(write))

            read_in_replicas = step()
            results.append((variable.numpy(), [value.numpy() for value in read_in_replicas]))
            if mirror_weights:
                self.assertIsInstance(variable, MirroredWeight)
                for copy in variable.values:
                    self.assertAllEqual(copy.numpy(), variable.numpy())
        (expected, expected_reads), (value, reads) = results
        self.assertAllClose(value, expected)
        self.assertAllClose(reads, expected_reads)

    def test_cross_replica_writes_reach_every_copy(self):
        strategy = _strategy(4)
        with strategy.scope():
            variable = tf.Variable([1.0, 2.0])
        variable.assign([3.0, 4.0])
        variable.assign_add([1.0, 1.0])
        variable.scatter_update(tf.IndexedSlices(tf.constant([9.0]), tf.constant([1])))
        self.assertAllEqual(variable.numpy(), [4.0, 9.0])
        for copy in variable.values:
            self.assertAllEqual(copy.numpy(), [4.0, 9.0])
        reads = strategy.run(lambda: tf.identity(variable))
        for read in strategy.experimental_local_results(reads):
            self.assertAllEqual(read, [4.0, 9.0])


class NumericsTest(_TestCase):
    """Training with mirror_weights equals one device, and mirror_weights=False."""

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_fit_matches_one_device(self, num_replicas):
        x, y = _data()  # Batch 12 splits evenly on 1, 2, 3 and 4 replicas.
        reference = _fit(None, _mlp, x, y, batch_size=12)
        model = _fit(_strategy(num_replicas), _mlp, x, y, batch_size=12)
        self.assertWeightsClose(model, reference)
        # predict reads the working copies, in the replicas.
        self.assertAllClose(model.predict(x, batch_size=12, verbose=0), reference(x), atol=1e-5)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_custom_loop_matches_one_device(self, num_replicas):
        # Global-batch scaling: exact for every split; batch 10 is uneven on 3 and 4 replicas.
        x, y = _data(40)
        batch_size = 10

        def train(strategy):
            with strategy.scope():
                model = _mlp()
                optimizer = keras.optimizers.Adam(0.02)
                optimizer.build(model.trainable_variables)

            @tf.function
            def step(batch):
                def replica_step(x, y):
                    with tf.GradientTape() as tape:
                        per_row = tf.square(model(x) - y)[:, 0]
                        loss = tf.nn.compute_average_loss(per_row, global_batch_size=batch_size)
                    gradients = tape.gradient(loss, model.trainable_variables)
                    optimizer.apply_gradients(zip(gradients, model.trainable_variables))

                strategy.run(replica_step, args=batch)

            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
            for _ in range(2):
                for batch in strategy.experimental_distribute_dataset(dataset):
                    step(batch)
            return model

        reference = train(tf.distribute.OneDeviceStrategy(_HOST))
        self.assertWeightsClose(train(_strategy(num_replicas)), reference)

    @parameterized.named_parameters(
        ("ten_on_three", 3, 40, 10),  # 4, 4, 2
        ("ten_on_four", 4, 40, 10),  # 3, 3, 3, 1
        ("empty_replicas", 4, 8, 6),  # 2, 2, 2, 0, then 1, 1, 0, 0
    )
    def test_uneven_fit_with_exact_uneven_batches_matches_one_device(
        self, num_replicas, rows, batch_size
    ):
        x, y = _data(rows)
        reference = _fit(None, _mlp, x, y, batch_size=batch_size)
        model = _fit(_strategy(num_replicas), _mlp, x, y, batch_size=batch_size, exact=True)
        self.assertWeightsClose(model, reference)

    def test_steps_per_execution_matches_one_device(self):
        x, y = _data()
        reference = _fit(None, _mlp, x, y, batch_size=12, steps_per_execution=3)
        model = _fit(_strategy(4), _mlp, x, y, batch_size=12, steps_per_execution=3)
        self.assertWeightsClose(model, reference)

    def test_adamw_and_a_kernel_constraint_match_one_device(self):
        # Weight decay and constraints write the weights outside the optimizer's update step.
        x, y = _data()

        def build():
            keras.utils.set_random_seed(7)
            model = keras.Sequential(
                [
                    keras.Input((_FEATURES,)),
                    keras.layers.Dense(6, activation="tanh"),
                    keras.layers.Dense(1, kernel_constraint=keras.constraints.MaxNorm(0.5)),
                ]
            )
            model.compile(optimizer=keras.optimizers.AdamW(0.02, weight_decay=0.1), loss="mse")
            return model

        reference = _fit(None, build, x, y, batch_size=12)
        model = _fit(_strategy(3), build, x, y, batch_size=12)
        self.assertWeightsClose(model, reference)

    def test_batch_normalization_matches_the_default_mode(self):
        # Per-replica batch statistics (as MirroredStrategy), so the oracle is the other mode.
        x, y = _data()

        def build():
            return _mlp(keras.layers.BatchNormalization())

        reference = _fit(_strategy(3, mirror_weights=False), build, x, y, batch_size=12)
        model = _fit(_strategy(3), build, x, y, batch_size=12)
        self.assertWeightsClose(model, reference)

    def test_synchronized_batch_normalization_matches_one_device(self):
        x, y = _data()

        def build():
            return _mlp(keras.layers.BatchNormalization(synchronized=True))

        reference = _fit(None, build, x, y, batch_size=12)
        model = _fit(_strategy(4), build, x, y, batch_size=12)
        self.assertWeightsClose(model, reference)

    def test_dropout_matches_the_default_mode(self):
        # Each replica draws its own masks (as under every strategy): the oracle is the other mode.
        x, y = _data()

        def build():
            return _mlp(keras.layers.Dropout(0.3, seed=3))

        reference = _fit(_strategy(2, mirror_weights=False), build, x, y, batch_size=12)
        model = _fit(_strategy(2), build, x, y, batch_size=12)
        self.assertWeightsClose(model, reference)

    def test_embedding_matches_one_device(self):
        # Sparse (IndexedSlices) gradients, summed among the replicas and applied on the host.
        rng = np.random.default_rng(2)
        x = rng.integers(0, 20, size=(48, 4))
        y = rng.normal(size=(48, 1)).astype("float32")

        def build():
            keras.utils.set_random_seed(5)
            model = keras.Sequential(
                [
                    keras.Input((4,), dtype="int32"),
                    keras.layers.Embedding(20, 3),
                    keras.layers.Flatten(),
                    keras.layers.Dense(1),
                ]
            )
            model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
            return model

        reference = _fit(None, build, x, y, batch_size=12)
        model = _fit(_strategy(4), build, x, y, batch_size=12)
        self.assertWeightsClose(model, reference)

    def test_mixed_float16_matches_the_default_mode(self):
        # Not one device: at loss scale 32768 one device's float16 gradient overflows once and
        # skips a step; the replicas' smaller per-replica sums do not, under every strategy
        # (MirroredStrategy too: all three end 0.055 from one device here).
        keras.mixed_precision.set_global_policy("mixed_float16")
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")
        x, y = _data()
        default = _fit(_strategy(4, mirror_weights=False), _mlp, x, y, batch_size=12)
        model = _fit(_strategy(4), _mlp, x, y, batch_size=12)
        self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        self.assertWeightsClose(model, default)


class TfKerasTest(_TestCase):
    """The tf_keras (Keras 2) path: its own optimizers, slots and gradient all-reduce."""

    @parameterized.named_parameters(("two_replicas", 2), ("three_replicas", 3))
    def test_fit_matches_one_device_and_slots_live_once_on_the_host(self, num_replicas):
        x, y = _data()

        def build():
            tf_keras.utils.set_random_seed(7)
            model = tf_keras.Sequential(
                [
                    tf_keras.Input((_FEATURES,)),
                    tf_keras.layers.Dense(6, activation="tanh"),
                    tf_keras.layers.Dense(1),
                ]
            )
            model.compile(optimizer=tf_keras.optimizers.Adam(0.02), loss="mse")
            return model

        models = [_in_scope(strategy, build) for strategy in (None, _strategy(num_replicas))]
        for model in models:
            model.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0)
        reference, model = models
        self.assertWeightsClose(model, reference)
        for variable in model.optimizer.variables():
            self.assertNotIsInstance(variable, values_lib.DistributedVariable)
            self.assertEqual(tf.DeviceSpec.from_string(variable.device).device_index, 0)

    def test_tf1_graph_mode_fit_initializes_the_masters(self):
        # In TF1 graph mode tf_keras (training_v1) initializes a variable with
        # `variable.initializer` when `is_variable_initialized(variable)` is False. For a
        # MirroredWeight the check reads the master (`_primary`), so its initializer must
        # initialize the master too, not only the copies as MirroredVariable's does. Found in
        # the mirror_weights placement of upstream testOptimizerWithKerasModelAndNumpyArrays.
        # In a fresh process: tf_keras keeps its TF1 graph and session, which later tests in
        # this process would inherit.
        script = textwrap.dedent(
            """
            import sys
            sys.path.insert(0, sys.argv[1])
            import virtual_devices
            import numpy as np
            import tensorflow as tf
            import tf_keras
            from tensorflow.python.eager import context
            from replica_strategy import ReplicaStrategy
            with context.graph_mode(), tf.Graph().as_default():
                strategy = ReplicaStrategy(["/cpu:1", "/cpu:2"], mirror_weights=True)
                with strategy.scope():
                    model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(1)])
                    model.compile(tf_keras.optimizers.legacy.SGD(0.1), "mse")
                x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
                loss = model.fit(x, y, batch_size=4, verbose=0).history["loss"]
            assert np.all(np.isfinite(loss)), loss
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script, os.path.dirname(os.path.abspath(__file__))],
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])

    @parameterized.named_parameters(("aggregated", True), ("not_aggregated", False))
    def test_apply_gradients_applies_the_sum_once_or_raises(self, aggregate):
        # tf_keras' experimental_aggregate_gradients=False would give each replica's copy its own
        # gradient (as under MirroredStrategy); the one master cannot take two: it raises.
        strategy = _strategy(2)
        with strategy.scope():
            variable = tf.Variable([0.0, 0.0])
            optimizer = tf_keras.optimizers.legacy.SGD(0.1)

        @tf.function
        def optimize():
            def step(gradient):
                optimizer.apply_gradients(
                    [(gradient, variable)], experimental_aggregate_gradients=aggregate
                )
                return variable.read_value()

            gradients = strategy.experimental_distribute_values_from_function(
                lambda context: tf.fill(
                    [2], tf.cast(context.replica_id_in_sync_group + 1, "float32")
                )
            )
            return strategy.experimental_local_results(strategy.run(step, args=(gradients,)))

        if aggregate:
            self.assertAllClose(optimize(), [[-0.3, -0.3], [-0.3, -0.3]])
            self.assertCopiesEqualMaster(variable)
        else:
            with self.assertRaisesRegex(NotImplementedError, "one copy of each variable"):
                optimize()
            self.assertAllEqual(variable.numpy(), [0.0, 0.0])  # Nothing applied.


_STRATEGIES = {
    "no_strategy": lambda: None,
    "mirrored_strategy": lambda: virtual_devices.mirrored_strategy(2),
    "default_mode": lambda: _strategy(2, mirror_weights=False),
    "mirror_weights": lambda: _strategy(2),
}
# Files written with mirror_weights load everywhere; files written anywhere load with it.
_SAVE_LOAD_PAIRS = [("mirror_weights", loader) for loader in _STRATEGIES] + [
    (saver, "mirror_weights") for saver in _STRATEGIES if saver != "mirror_weights"
]


class SavingTest(_TestCase):
    """Every format holds one plain value per variable (the master) and loads both ways."""

    def _model(self, strategy, distinct_values=False):
        def build():
            model = _mlp()
            model.optimizer.build(model.trainable_variables)
            return model

        model = _in_scope(strategy, build)
        if distinct_values:  # Written in cross-replica context: masters and copies.
            for index, variable in enumerate(model.weights + model.optimizer.variables):
                variable.assign(tf.fill(variable.shape, 0.25 * (index + 1)))
        return model

    def _check_pairs(self, save, load, state_of=lambda model: model.weights):
        """Saves under each saver, loads under each loader, compares state and predictions.

        `load(strategy, path, build)` returns the loaded state (a list of variables, compared
        with `state_of(written)`, or a list of saved variables compared by count) and a predict
        function.
        """
        x, _ = _data(8)
        for saver, loader in _SAVE_LOAD_PAIRS:
            with self.subTest(saver=saver, loader=loader):
                path = os.path.join(self.get_temp_dir(), f"{saver}_to_{loader}")
                written = self._model(_STRATEGIES[saver](), distinct_values=True)
                save(written, path)
                strategy = _STRATEGIES[loader]()
                state, predict = load(
                    strategy, path, lambda strategy=strategy: self._model(strategy)
                )
                expected = state_of(written)
                self.assertLen(state, len(expected))  # One value per variable, no copies.
                for ours, theirs in zip(state, expected, strict=True):
                    if state_of not in (_count_only, _count_with_optimizer):
                        self.assertAllEqual(_numpy(ours), _numpy(theirs))
                    if loader == "mirror_weights" and ours.trainable:
                        self.assertCopiesEqualMaster(_tf_variable(ours))
                self.assertAllClose(predict(x), written(x), atol=1e-6)

    def test_checkpoint(self):
        def save(model, path):
            tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(path)

        def load(strategy, path, build):
            model = build()
            checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
            checkpoint.read(path).assert_consumed()
            return model.weights + model.optimizer.variables, _predict(model)

        self._check_pairs(save, load, lambda model: model.weights + model.optimizer.variables)
        # One plain value per variable: the same keys and shapes as a run without a strategy.
        plain, mirrored = (os.path.join(self.get_temp_dir(), name) for name in ("plain", "mw"))
        tf.train.Checkpoint(model=self._model(None)).write(plain)
        tf.train.Checkpoint(model=self._model(_strategy(4))).write(mirrored)
        self.assertEqual(tf.train.list_variables(mirrored), tf.train.list_variables(plain))

    def test_weights_h5(self):
        def load(strategy, path, build):
            model = build()
            model.load_weights(f"{path}.weights.h5")
            return model.weights, _predict(model)

        self._check_pairs(lambda model, path: model.save_weights(f"{path}.weights.h5"), load)

    def test_keras_file(self):
        def load(strategy, path, build):
            model = _in_scope(strategy, keras.models.load_model, f"{path}.keras")
            return model.weights + model.optimizer.variables, _predict(model)

        self._check_pairs(
            lambda model, path: model.save(f"{path}.keras"),
            load,
            lambda model: model.weights + model.optimizer.variables,
        )

    def test_tf_saved_model(self):
        def load(strategy, path, build):
            loaded = _in_scope(strategy, tf.saved_model.load, path)
            serve = loaded.signatures["serving_default"]
            return _variables_of(loaded), lambda x: next(iter(serve(tf.constant(x)).values()))

        self._check_pairs(tf.saved_model.save, load, _count_with_optimizer)

    def test_model_export(self):
        def load(strategy, path, build):
            loaded = _in_scope(strategy, tf.saved_model.load, path)
            return list(loaded.variables), loaded.serve  # `serve` keeps `loaded` alive.

        self._check_pairs(lambda model, path: model.export(path, verbose=False), load, _count_only)


def _count_only(model):
    """SavedModels are compared by their number of variables (and their predictions)."""
    return model.weights


def _count_with_optimizer(model):
    return model.weights + model.optimizer.variables


def _predict(model):
    return lambda x: model(x)


def _tf_variable(variable):
    """The TensorFlow variable behind a Keras variable (or the variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _numpy(variable):
    return _tf_variable(variable).numpy()


def _variables_of(loaded):
    """Every distinct variable a loaded SavedModel holds."""
    found = {}
    for trackable in tf.train.TrackableView(loaded).descendants():
        if isinstance(trackable, tf.Variable):
            found.setdefault(id(trackable), trackable)
    return list(found.values())


if __name__ == "__main__":
    tf.test.main()
