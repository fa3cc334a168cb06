"""Tests for ReplicaStrategy's tf.distribute contract, with TF's own strategies as oracles.

The classes after ConstructionTest run in each placement of tests/placements.py, with
MirroredStrategy on the same replica devices as the oracle.
"""

import os
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import replica_strategy
from replica_strategy._variables import ParameterVariable

import keras_testing
import placements
import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

_REPLICA_COUNTS = (
    ("one_replica", 1),
    ("two_replicas", 2),
    ("three_replicas", 3),
    ("four_replicas", 4),
)


def _local(strategy, value):
    return [t.numpy() for t in strategy.experimental_local_results(value)]


class ConstructionTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_repr_names_the_devices(self):
        strategy = replica_strategy.ReplicaStrategy(["/cpu:1", "/cpu:2"], parameter_device="/cpu:0")
        self.assertEqual(
            repr(strategy),
            "ReplicaStrategy(devices=['/job:localhost/replica:0/task:0/device:CPU:1', "
            "'/job:localhost/replica:0/task:0/device:CPU:2'], "
            "parameter_device='/device:CPU:0', merge_device='/device:CPU:0')",
        )
        self.assertEqual(strategy.num_replicas_in_sync, 2)

    def test_default_devices_without_gpu_is_one_cpu_replica(self):
        strategy = replica_strategy.ReplicaStrategy()
        self.assertEqual(strategy.num_replicas_in_sync, 1)

    def test_merge_device_defaults_to_parameter_device(self):
        strategy = replica_strategy.ReplicaStrategy(
            virtual_devices.cpus(2), parameter_device="/cpu:3"
        )
        self.assertEqual(strategy.merge_device, "/device:CPU:3")
        self.assertEqual(strategy.extended.parameter_devices, ("/device:CPU:3",))

    def test_construction_logs_replica_strategy_not_central_storage(self):
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("INFO")
        try:
            with self.assertLogs(logger, "INFO") as logs:
                replica_strategy.ReplicaStrategy(virtual_devices.cpus(2))
        finally:
            logger.setLevel(level)
        messages = "\n".join(record.getMessage() for record in logs.records)
        self.assertIn("ReplicaStrategy with replicas on", messages)
        self.assertNotIn("CentralStorageStrategy", messages)

    def test_bad_devices_raise_value_error(self):
        with self.assertRaisesRegex(ValueError, "Received: devices=\\[\\]"):
            replica_strategy.ReplicaStrategy([])
        with self.assertRaisesRegex(ValueError, "merge_device='/cpu:7'"):
            replica_strategy.ReplicaStrategy(virtual_devices.cpus(2), merge_device="/cpu:7")

    def test_mixing_strategy_scopes_raises_runtime_error(self):
        ours, theirs = self.replica_strategy(2), self.mirrored_strategy(2)
        with ours.scope():
            with self.assertRaisesRegex(RuntimeError, "Mixing different tf.distribute.Strategy"):
                with theirs.scope():
                    pass


@placements.across_placements()
class VariablePlacementTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_one_copy_of_each_weight_and_slot_on_the_parameter_device(self, num_replicas):
        strategy = self.replica_strategy(num_replicas, parameter_device="/cpu:3")
        with strategy.scope():
            model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
            optimizer = tf.keras.optimizers.Adam()
            optimizer.build(model.trainable_variables)
        weights = [v.value for v in model.weights]
        if self.placement == placements.MIRROR_WEIGHTS:
            # Trainable weights also have a working copy on each replica device (a replica on
            # the parameter device uses the master); the master is the one copy checked below.
            for weight in weights:
                self.assertEqual(
                    [tf.DeviceSpec.from_string(copy.device).device_index for copy in weight.values],
                    self.replica_device_indices(num_replicas),
                )
            masters = [weight.master for weight in weights]  # Plain variables.
            weights = []
        else:
            masters = []
        variables = weights + [v.value for v in optimizer.variables]
        for variable in variables + masters:
            # A variable with copies would expose them through `.values`; ours is one variable.
            self.assertFalse(hasattr(variable, "values"), variable.name)
            self.assertEqual(tf.DeviceSpec.from_string(variable.device).device_index, 3)
        for variable in variables:
            if num_replicas > 1:
                self.assertIsInstance(variable, ParameterVariable)
        self.assertTrue(strategy.extended.variable_created_in_scope(model.weights[0].value))

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_synchronization_auto_means_on_write_as_under_mirrored_strategy(self, num_replicas):
        for strategy in (self.replica_strategy(num_replicas), self.mirrored_strategy(num_replicas)):
            with strategy.scope():
                variable = tf.Variable(1.0, synchronization=tf.VariableSynchronization.AUTO)
            self.assertEqual(
                variable.synchronization, tf.VariableSynchronization.ON_WRITE, msg=str(strategy)
            )

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_synchronization_none_is_refused_as_under_mirrored_strategy(self, num_replicas):
        for strategy in (self.replica_strategy(num_replicas), self.mirrored_strategy(num_replicas)):
            with strategy.scope():
                with self.assertRaisesRegex(ValueError, "`synchronization`.*kept"):
                    tf.Variable(1.0, name="kept", synchronization=tf.VariableSynchronization.NONE)

    @parameterized.named_parameters(*_REPLICA_COUNTS[1:])
    def test_on_read_variables_have_one_copy_per_replica(self, num_replicas):
        strategy = self.replica_strategy(num_replicas)
        with strategy.scope():
            total = tf.Variable(
                0.0,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
        copies = strategy.experimental_local_results(total)
        self.assertLen(copies, num_replicas)
        self.assertEqual(
            [tf.DeviceSpec.from_string(copy.device).device_index for copy in copies],
            self.replica_device_indices(num_replicas),
        )


@placements.across_placements()
class RunTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_each_replica_runs_on_its_own_device(self, num_replicas):
        strategy = self.replica_strategy(num_replicas)

        def replica_fn():
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            return tf.matmul(tf.fill([1, 1], tf.cast(replica_id, tf.float32)), tf.ones([1, 1]))

        results = strategy.experimental_local_results(strategy.run(replica_fn))
        self.assertEqual([int(r[0, 0]) for r in results], list(range(num_replicas)))
        self.assertEqual(
            [tf.DeviceSpec.from_string(r.device).device_index for r in results],
            self.replica_device_indices(num_replicas),
        )

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_traced_replica_ops_are_placed_on_their_devices(self, num_replicas):
        strategy = self.replica_strategy(num_replicas)
        graph = tf.function(
            lambda: strategy.run(lambda: tf.matmul(tf.ones([2, 2]), tf.ones([2, 2])))
        )
        matmuls = [
            op for op in graph.get_concrete_function().graph.get_operations() if op.type == "MatMul"
        ]
        self.assertEqual(
            sorted(tf.DeviceSpec.from_string(op.device).device_index for op in matmuls),
            self.replica_device_indices(num_replicas),
        )

    @parameterized.named_parameters(
        ("eager", False, 3), ("function", True, 3), ("function_four", True, 4)
    )
    def test_replica_context_collectives(self, use_function, num_replicas):
        def replica_fn():
            context = tf.distribute.get_replica_context()
            replica_id = tf.cast(context.replica_id_in_sync_group, tf.float32)
            return {
                "sum": context.all_reduce("SUM", replica_id + 1.0),
                "mean": context.all_reduce("MEAN", tf.stack([replica_id, 2 * replica_id])),
                "gathered": context.all_gather(tf.fill([2], replica_id), axis=0),
                "merged": context.merge_call(
                    lambda strategy, value: strategy.reduce("SUM", value, None), args=(replica_id,)
                ),
            }

        ids = np.arange(num_replicas, dtype=np.float32)
        expected = {
            "sum": ids.sum() + num_replicas,
            "mean": [ids.mean(), 2 * ids.mean()],
            "gathered": np.repeat(ids, 2),
            "merged": ids.sum(),
        }
        strategy = self.replica_strategy(num_replicas)
        results = strategy.run(tf.function(replica_fn) if use_function else replica_fn)
        for key, value in results.items():
            for replica_value in _local(strategy, value):
                self.assertAllClose(replica_value, expected[key], msg=key)
        if not use_function:  # MirroredStrategy, the oracle, agrees (eagerly).
            mirrored = self.mirrored_strategy(num_replicas)
            for key, value in mirrored.run(replica_fn).items():
                self.assertAllClose(_local(mirrored, value)[0], expected[key], msg=key)

    @parameterized.named_parameters(("eager", False), ("function", True))
    def test_all_gather_of_uneven_rows_is_complete_and_ordered(self, use_function):
        def replica_fn():
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            rows = tf.fill([replica_id + 1], tf.cast(replica_id, tf.float32))
            return tf.distribute.get_replica_context().all_gather(rows, axis=0)

        strategy = self.replica_strategy(3)
        fn = tf.function(replica_fn) if use_function else replica_fn
        for gathered in _local(strategy, strategy.run(fn)):
            self.assertAllEqual(gathered, [0.0, 1.0, 1.0, 2.0, 2.0, 2.0])


@placements.across_placements()
class DatasetTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_distributed_dataset_matches_mirrored_row_for_row(self, num_replicas):
        # 13 rows in batches of 5: uneven splits and a last partial batch of 3.
        dataset = tf.data.Dataset.range(13).batch(5)
        ours, theirs = self.replica_strategy(num_replicas), self.mirrored_strategy(num_replicas)
        actual = [_local(ours, x) for x in ours.experimental_distribute_dataset(dataset)]
        expected = [_local(theirs, x) for x in theirs.experimental_distribute_dataset(dataset)]
        self.assertEqual(
            [[r.tolist() for r in step] for step in actual],
            [[r.tolist() for r in step] for step in expected],
        )
        seen = np.concatenate([np.concatenate(step) for step in actual])
        self.assertAllEqual(seen, np.arange(13))  # Every sample once, in order.

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_datasets_from_function_keep_the_last_partial_step(self, num_replicas):
        strategy = self.replica_strategy(num_replicas)

        def dataset_fn(input_context):
            self.assertEqual(input_context.num_replicas_in_sync, num_replicas)
            return tf.data.Dataset.range(7).batch(2)

        per_replica_batches = [
            batch
            for element in strategy.distribute_datasets_from_function(dataset_fn)
            for batch in _local(strategy, element)
        ]
        seen = np.concatenate(per_replica_batches)
        self.assertCountEqual(seen.tolist(), list(range(7)))

    def test_input_options_fetch_to_host(self):
        strategy = self.replica_strategy(2)
        options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
        dataset = tf.data.Dataset.range(4).batch(4)
        element = next(iter(strategy.experimental_distribute_dataset(dataset, options)))
        for part in strategy.experimental_local_results(element):
            self.assertEqual(tf.DeviceSpec.from_string(part.device).device_index, 0)

    def test_per_replica_input_replication(self):
        strategy = self.replica_strategy(2)
        options = tf.distribute.InputOptions(
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA
        )

        def dataset_fn(input_context):
            start = input_context.input_pipeline_id * 10
            return tf.data.Dataset.range(start, start + 2).batch(2)

        element = next(iter(strategy.distribute_datasets_from_function(dataset_fn, options)))
        self.assertEqual([r.tolist() for r in _local(strategy, element)], [[0, 1], [10, 11]])

    def test_values_from_function(self):
        strategy = self.replica_strategy(3)
        value = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(context.replica_id_in_sync_group * 10)
        )
        self.assertEqual([int(v) for v in _local(strategy, value)], [0, 10, 20])


@placements.across_placements()
class ReduceAndGatherTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    def _per_replica_rows(self, strategy, batch_size):
        dataset = (
            tf.data.Dataset.range(batch_size)
            .map(lambda i: tf.cast(i, tf.float32))
            .batch(batch_size)
        )
        return next(iter(strategy.experimental_distribute_dataset(dataset)))

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_axis_zero_reductions_and_gather_are_exact_on_uneven_splits(self, num_replicas):
        strategy = self.replica_strategy(num_replicas)
        rows = self._per_replica_rows(strategy, 10)  # 10 on 3 or 4 replicas is uneven.
        self.assertAllClose(strategy.reduce("SUM", rows, axis=0), 45.0)
        self.assertAllClose(strategy.reduce("MEAN", rows, axis=0), 4.5)
        gathered = strategy.gather(rows, axis=0)
        self.assertAllEqual(gathered, np.arange(10))
        # Where MirroredStrategy on the same devices gathers: the current device (/cpu:0, the
        # host) from several replicas; one replica's value stays on its device.
        oracle = self.mirrored_strategy(num_replicas)
        expected = oracle.gather(self._per_replica_rows(oracle, 10), axis=0)
        self.assertEqual(gathered.device, expected.device)
        if num_replicas > 1:
            self.assertEqual(tf.DeviceSpec.from_string(gathered.device).device_index, 0)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_nested_structures_are_reduced_leaf_by_leaf(self, num_replicas):
        ours, theirs = self.replica_strategy(num_replicas), self.mirrored_strategy(num_replicas)

        def replica_fn():
            replica_id = tf.cast(
                tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32
            )
            return {"a": replica_id, "b": (replica_id * 2.0, tf.fill([2], replica_id))}

        for reduce_op in ("SUM", "MEAN"):
            expected = tf.nest.map_structure(
                lambda v, op=reduce_op: theirs.reduce(op, v, axis=None), theirs.run(replica_fn)
            )
            actual = ours.reduce(reduce_op, ours.run(replica_fn), axis=None)
            tf.nest.map_structure(self.assertAllClose, actual, expected)
        gathered = ours.gather(ours.run(replica_fn)["b"][1], axis=0)
        self.assertAllClose(gathered, np.repeat(np.arange(num_replicas, dtype=np.float32), 2))
        if num_replicas > 1:
            with self.assertRaisesRegex(ValueError, "Cannot merge per-replica scalars"):
                ours.gather(ours.run(replica_fn)["a"], axis=0)

    @parameterized.named_parameters(("eager", False), ("function", True))
    def test_reduce_across_replicas_of_different_shapes_raises(self, use_function):
        # 5 rows on 2 replicas: [0, 1, 2] and [3, 4]. Adding them element by element would drop
        # a row; the error says how to reduce every row.
        strategy = self.replica_strategy(2)
        rows = self._per_replica_rows(strategy, 5)

        def reduce(op):
            return strategy.reduce(op, rows, axis=None)

        for op in ("SUM", "MEAN"):
            with self.assertRaisesRegex(
                ValueError, r"replicas hold shapes \[\[3\], \[2\]\].*axis=0.*gather"
            ):
                tf.function(reduce)(op) if use_function else reduce(op)
        self.assertAllClose(strategy.reduce("SUM", rows, axis=0), 10.0)

    def test_all_reduce_of_different_shapes_raises(self):
        strategy = self.replica_strategy(2)
        rows = self._per_replica_rows(strategy, 5)
        with self.assertRaisesRegex(ValueError, r"shapes \[\[3\], \[2\]\].*all_gather"):
            strategy.run(
                lambda x: tf.distribute.get_replica_context().all_reduce("SUM", x), args=(rows,)
            )

    @parameterized.named_parameters(
        ("uneven", "dense", 5),  # 2, 2, 1 rows: MirroredStrategy fails here.
        ("fewer_rows_than_replicas", "dense", 2),  # 1, 1, 0 rows.
        ("strings", "string", 6),  # No reduction takes strings or sparse tensors: every
        ("sparse", "sparse", 6),  # strategy failed on these before the first step.
    )
    def test_keras_builds_a_model_on_its_first_batch(self, kind, batch_size):
        # Keras 3 reduces the first batch (MEAN, axis=None) only to learn its shapes and dtypes;
        # that one call is recognised, and the model builds whatever the split or the dtype.
        x, layers = _keras_first_batch(kind, batch_size)
        y = np.linspace(0.0, 1.0, batch_size, dtype="float32").reshape(batch_size, 1)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

        def build():
            tf.keras.utils.set_random_seed(1)
            model = tf.keras.Sequential([*layers(), tf.keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            return model

        reference = build()
        with self.replica_strategy(3).scope():
            model = build()
        history = model.fit(dataset, verbose=0).history
        expected = reference.fit(dataset, verbose=0).history
        if batch_size % 3 == 0:  # Even splits train as one device.
            self.assertAllClose(history["loss"], expected["loss"], atol=1e-5)
            self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        reference.set_weights(model.get_weights())
        self.assertAllClose(
            model.evaluate(dataset, verbose=0), reference.evaluate(dataset, verbose=0), atol=1e-5
        )

    def test_reduce_outside_cross_replica_context_raises(self):
        strategy = self.replica_strategy(2)

        def replica_fn():
            return strategy.reduce("SUM", 1.0, axis=None)

        with self.assertRaisesRegex(RuntimeError, "cross-replica context"):
            strategy.run(replica_fn)


def _keras_first_batch(kind, batch_size):
    """Features of `kind` for `batch_size` rows, and the layers (a function) that read them."""
    if kind == "string":
        words = tf.constant([["a"], ["b"], ["c"], ["a"], ["b"], ["d"]])[:batch_size]
        return words, lambda: [
            tf.keras.Input((1,), dtype="string"),
            tf.keras.layers.StringLookup(vocabulary=["a", "b", "c"], output_mode="one_hot"),
        ]
    features = np.arange(batch_size * 3, dtype="float32").reshape(batch_size, 3) % 4
    if kind == "sparse":
        return tf.sparse.from_dense(features), lambda: [tf.keras.Input((3,), sparse=True)]
    return features, lambda: [tf.keras.Input((3,))]


def _build_model(seed=3):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential(
        [
            tf.keras.Input((5,)),
            tf.keras.layers.Dense(7, activation="tanh"),
            tf.keras.layers.Dense(2),
        ]
    )


def _train_custom_loop(strategy, x, y, global_batch_size, steps=5):
    """Trains with `tf.nn.compute_average_loss` over the global batch, the tf.distribute idiom."""
    with strategy.scope():
        model = _build_model()
        optimizer = tf.keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch_size).take(steps)

    @tf.function
    def step(inputs):
        def replica_step(features, labels):
            with tf.GradientTape() as tape:
                per_example = tf.reduce_sum(tf.square(model(features) - labels), axis=1)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(replica_step, args=inputs), axis=None)

    losses = [float(step(inputs)) for inputs in strategy.experimental_distribute_dataset(dataset)]
    return [w.numpy() for w in model.weights], losses


# Four replicas in the default placement only, but against MirroredStrategy in every placement:
# the suite's time budget.
@placements.across_placements(first_placement_only=("even_four", "uneven_four"))
class CustomTrainingLoopTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    @parameterized.named_parameters(
        ("even_two", 2, 8),
        ("even_four", 4, 8),
        ("uneven_three", 3, 10),
        ("uneven_four", 4, 10),
        ("fewer_rows_than_replicas", 4, 2),
    )
    def test_weights_after_five_steps_equal_one_device(self, num_replicas, global_batch_size):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5 * global_batch_size, 5)).astype(np.float32)
        y = rng.normal(size=(5 * global_batch_size, 2)).astype(np.float32)
        expected_weights, expected_losses = _train_custom_loop(
            tf.distribute.get_strategy(), x, y, global_batch_size
        )
        weights, losses = _train_custom_loop(
            self.replica_strategy(num_replicas), x, y, global_batch_size
        )
        self.assertAllClose(losses, expected_losses, atol=1e-5)
        for actual, expected in zip(weights, expected_weights):
            self.assertAllClose(actual, expected, atol=1e-5)

    def test_weights_equal_mirrored_strategy(self):
        rng = np.random.default_rng(1)
        x, y = (
            rng.normal(size=(40, 5)).astype(np.float32),
            rng.normal(size=(40, 2)).astype(np.float32),
        )
        expected, _ = _train_custom_loop(self.mirrored_strategy(4), x, y, 8)
        actual, _ = _train_custom_loop(self.replica_strategy(4), x, y, 8)
        for a, e in zip(actual, expected):
            self.assertAllClose(a, e, atol=1e-5)


@placements.across_placements()
class CheckpointTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    def _model_and_optimizer(self, strategy, seed):
        with strategy.scope():
            model = _build_model(seed)
            optimizer = tf.keras.optimizers.Adam(0.01)
            optimizer.build(model.trainable_variables)
            step = tf.Variable(seed, dtype=tf.int64)
        return model, optimizer, step

    def _values(self, model, optimizer, step):
        return [v.numpy() for v in model.weights + optimizer.variables] + [step.numpy()]

    @parameterized.named_parameters(
        ("replica_to_default", "replica", "default"),
        ("default_to_replica", "default", "replica"),
        ("replica_to_mirrored", "replica", "mirrored"),
        ("mirrored_to_replica", "mirrored", "replica"),
    )
    def test_checkpoints_interchange(self, writer, reader):
        strategies = {
            "replica": lambda: self.replica_strategy(3),
            "mirrored": lambda: self.mirrored_strategy(3),
            "default": tf.distribute.get_strategy,
        }
        written = self._model_and_optimizer(strategies[writer](), seed=1)
        prefix = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "ckpt")
        path = tf.train.Checkpoint(model=written[0], optimizer=written[1], step=written[2]).write(
            prefix
        )
        restored = self._model_and_optimizer(strategies[reader](), seed=2)
        tf.train.Checkpoint(model=restored[0], optimizer=restored[1], step=restored[2]).read(
            path
        ).assert_consumed()
        for actual, expected in zip(self._values(*restored), self._values(*written)):
            self.assertAllEqual(actual, expected)

    @parameterized.named_parameters(("inside_scope", True), ("outside_scope", False))
    def test_saved_model_round_trip(self, save_in_scope):
        strategy = self.replica_strategy(2)
        with strategy.scope():
            module = tf.Module()
            module.weight = tf.Variable([[1.0], [2.0]])
            module.call = tf.function(
                lambda x: tf.matmul(x, module.weight),
                input_signature=[tf.TensorSpec([None, 2], tf.float32)],
            )
        path = os.path.join(self.get_temp_dir(), f"saved_{save_in_scope}")
        if save_in_scope:
            with strategy.scope():
                tf.saved_model.save(module, path)
        else:
            tf.saved_model.save(module, path)
        x = tf.constant([[1.0, 1.0]])
        loaded_without_strategy = tf.saved_model.load(path)
        self.assertAllClose(loaded_without_strategy.call(x), [[3.0]])
        with strategy.scope():
            loaded_in_scope = tf.saved_model.load(path)
        self.assertAllClose(loaded_in_scope.call(x), [[3.0]])


@placements.across_placements()
class EmptyReplicaTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    def _one_sgd_step(self, strategy, x, y):
        with strategy.scope():
            tf.keras.utils.set_random_seed(4)
            model = tf.keras.Sequential(
                [
                    tf.keras.Input((3,)),
                    tf.keras.layers.Dense(4),
                    tf.keras.layers.BatchNormalization(),
                    tf.keras.layers.Dense(1),
                ]
            )
            model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
            initial = [w.numpy() for w in model.trainable_weights]
        model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        return [w.numpy() - w0 for w, w0 in zip(model.trainable_weights, initial, strict=True)]

    def test_a_replica_with_no_rows_contributes_nothing(self):
        # 4 rows on 3 replicas split 2, 2, 0. The empty replica's BatchNormalization gradients are
        # NaN (mean over no rows); they must not reach the weights. Every row weighing 1/B, the
        # update then equals the same step on 2 replicas (2, 2) (2/3 of it by tf.distribute's 1/N
        # convention, which ReplicaStrategy no longer follows).
        rng = np.random.default_rng(2)
        x, y = (
            rng.normal(size=(4, 3)).astype(np.float32),
            rng.normal(size=(4, 1)).astype(np.float32),
        )
        three = self._one_sgd_step(self.replica_strategy(3), x, y)
        two = self._one_sgd_step(self.replica_strategy(2), x, y)
        for delta_three, delta_two in zip(three, two, strict=True):
            self.assertTrue(np.all(np.isfinite(delta_three)))
            self.assertAllClose(delta_three, delta_two, atol=1e-6)

    def _custom_loop_with_regularization(self, strategy, x, y, use_function):
        # TF's documented custom-loop loss (tf.distribute tutorial): per-example loss averaged
        # over the global batch, plus the regularization loss scaled by 1/num_replicas_in_sync.
        with strategy.scope():
            model = tf.keras.Sequential(
                [
                    tf.keras.Input((5,)),
                    tf.keras.layers.Dense(3, kernel_regularizer=tf.keras.regularizers.L2(0.1)),
                    tf.keras.layers.Dense(1, kernel_regularizer=tf.keras.regularizers.L2(0.1)),
                ]
            )
            model.set_weights([np.full(w.shape, 0.5, "float32") for w in model.weights])
            optimizer = tf.keras.optimizers.SGD(0.1)
            optimizer.build(model.trainable_variables)

        def replica_step(features, labels):
            with tf.GradientTape() as tape:
                per_example = tf.square(model(features) - labels)[:, 0]
                loss = tf.nn.compute_average_loss(
                    per_example, global_batch_size=len(x)
                ) + tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)).repeat(3)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        if use_function:  # In the traced step the batch dimension is unknown: rows at run time.

            @tf.function
            def train(iterator):
                for _ in tf.range(3):
                    strategy.run(replica_step, args=next(iterator))

            train(iterator)
        else:
            for _ in range(3):
                strategy.run(replica_step, args=next(iterator))
        return [w.numpy() for w in model.weights]

    @parameterized.named_parameters(("eager", False), ("function", True))
    def test_an_empty_replica_keeps_its_share_of_the_regularization_loss(self, use_function):
        # 1 row on 2 replicas: replica 1 has no rows, but its half of the regularization
        # gradient is real. One device and MirroredStrategy agree on the weights.
        rng = np.random.default_rng(5)
        x, y = rng.normal(size=(1, 5)).astype("float32"), np.ones((1, 1), "float32")
        expected = self._custom_loop_with_regularization(
            tf.distribute.get_strategy(), x, y, use_function
        )
        mirrored = self._custom_loop_with_regularization(self.mirrored_strategy(2), x, y, False)
        actual = self._custom_loop_with_regularization(self.replica_strategy(2), x, y, use_function)
        for ours, theirs, one_device in zip(actual, mirrored, expected, strict=True):
            self.assertAllClose(theirs, one_device, atol=1e-6)
            self.assertAllClose(ours, one_device, atol=1e-6)

    @parameterized.named_parameters(("eager", False), ("function", True))
    def test_all_reduce_counts_a_replica_with_no_rows(self, use_function):
        def count_replicas(rows):
            del rows  # Only splits the step: 1 row, 0 rows.
            return tf.distribute.get_replica_context().all_reduce("SUM", tf.ones([]))

        for strategy in (self.replica_strategy(2), self.mirrored_strategy(2)):
            dataset = tf.data.Dataset.range(1).batch(1)
            iterator = iter(strategy.experimental_distribute_dataset(dataset))

            def step(iterator, strategy=strategy):
                return strategy.run(count_replicas, args=(next(iterator),))

            if use_function:
                step = tf.function(step)
            self.assertAllClose(_local(strategy, step(iterator)), [2.0, 2.0], msg=str(strategy))


@placements.across_placements()
class ConcurrentRunTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_runs_from_several_threads_see_only_their_own_rows(self):
        # Each call splits its own batch (1 to 4 rows on 2 replicas: some leave replica 1
        # empty); what one call learns of its rows must not leak into a call in another thread.
        strategy = self.replica_strategy(2)

        def replica_fn(x):
            time.sleep(0.002)  # Lets the calls of the other threads interleave with this one.
            fraction = tf.cast(strategy.extended.replica_row_fraction(), tf.float32)
            context = tf.distribute.get_replica_context()
            return context.all_reduce("SUM", tf.reduce_sum(x)), fraction

        def call(batch_size):
            x = strategy.experimental_distribute_values_from_function(
                lambda context: tf.range(batch_size, dtype=tf.float32)[
                    context.replica_id_in_sync_group * 2 :
                ][:2]
            )
            total, fraction = strategy.run(replica_fn, args=(x,))
            return _local(strategy, total), _local(strategy, fraction)

        batch_sizes = [1 + index % 4 for index in range(30)]
        results = [None] * len(batch_sizes)

        def worker(indices):
            for index in indices:
                results[index] = call(batch_sizes[index])

        threads = [
            threading.Thread(target=worker, args=(range(start, len(batch_sizes), 5),))
            for start in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for batch_size, (total, fraction) in zip(batch_sizes, results, strict=True):
            rows = [min(2, batch_size), max(0, batch_size - 2)]
            expected_total = sum(range(batch_size))
            self.assertAllClose(total, [expected_total] * 2, msg=f"batch of {batch_size}")
            self.assertAllClose(
                fraction, [r / batch_size for r in rows], msg=f"batch of {batch_size}"
            )


if __name__ == "__main__":
    tf.test.main()
