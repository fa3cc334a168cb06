"""`ReplicaStrategy(split=...)` at work: datasets, numerics against one device, and "auto".

Oracles: one device (no strategy) for weights and results, `batching.weighted_split_sizes`
for the rows each replica gets, and the even split for what must not change.
"""

import logging
import os
import time

import keras_testing
import virtual_devices

# isort: split

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized
from tensorflow.python.distribute import input_lib

from replica_strategy import ReplicaStrategy, batching

_FEATURES = 3
# Replicas on devices apart from the host, and replicas that include it.
_TWO = ["/cpu:1", "/cpu:2"]
_THREE = ["/cpu:1", "/cpu:2", "/cpu:3"]
_FOUR_WITH_HOST = ["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]


def _data(rows=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1).astype("float32")
    return x, y


def _mlp(*extra_layers, optimizer=None):
    """A tiny regression model with fixed initial weights (same seed => same weights)."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((_FEATURES,)),
            keras.layers.Dense(4, activation="tanh"),
            *extra_layers,
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


def _rows_of(strategy, per_replica):
    return [int(part.shape[0]) for part in strategy.experimental_local_results(per_replica)]


def _devices_of(strategy, per_replica):
    return [
        tf.DeviceSpec.from_string(part.device).device_index
        for part in strategy.experimental_local_results(per_replica)
    ]


class SplitDatasetTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("three_two_one", _THREE, [3, 2, 1]),
        ("with_the_host", _FOUR_WITH_HOST, [1, 1, 1, 5]),
        ("two_floats", _TWO, (0.8, 0.2)),
    )
    def test_batches_split_by_weights_in_order_last_partial_batch_kept(self, devices, split):
        strategy = ReplicaStrategy(devices, split=split)
        dataset = tf.data.Dataset.range(47).batch(10)  # The last batch has 7 rows.
        seen = []
        for element in strategy.experimental_distribute_dataset(dataset):
            rows = _rows_of(strategy, element)
            self.assertEqual(rows, batching.weighted_split_sizes(sum(rows), strategy.split))
            self.assertEqual(
                _devices_of(strategy, element),
                [tf.DeviceSpec.from_string(device).device_index for device in devices],
            )
            seen.append(strategy.gather(element, axis=0).numpy())
        self.assertEqual([len(batch) for batch in seen], [10, 10, 10, 10, 7])
        self.assertAllEqual(np.concatenate(seen), np.arange(47))

    def test_even_split_keeps_tensorflows_pipeline(self):
        strategy = ReplicaStrategy(_THREE)
        distributed = strategy.experimental_distribute_dataset(tf.data.Dataset.range(10).batch(10))
        self.assertIs(type(distributed), input_lib.DistributedDataset)
        self.assertEqual(_rows_of(strategy, next(iter(distributed))), [4, 4, 2])

    def test_batch_smaller_than_the_replicas(self):
        strategy = ReplicaStrategy(_THREE, split=[1, 1, 2])
        element = next(
            iter(strategy.experimental_distribute_dataset(tf.data.Dataset.range(1).batch(1)))
        )
        self.assertEqual(_rows_of(strategy, element), [0, 0, 1])
        self.assertAllEqual(strategy.gather(element, axis=0), [0])

    def test_in_a_function_nested_inputs_no_retrace_when_the_split_changes(self):
        strategy = ReplicaStrategy(_TWO, split=[1, 1])
        features = {"a": np.arange(24).reshape(12, 2), "b": np.arange(12.0)}
        dataset = tf.data.Dataset.from_tensor_slices((features, np.arange(12))).batch(6)
        traces = []

        @tf.function
        def step(iterator):
            traces.append(1)
            (inputs, labels) = next(iterator)
            rows = strategy.run(lambda x, y: tf.shape(y)[:1], args=(inputs, labels))
            return strategy.gather(inputs, axis=0), strategy.gather(rows, axis=0)

        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        gathered, rows = step(iterator)
        self.assertAllEqual(rows, [3, 3])
        strategy.extended._split.fractions.assign([5 / 6, 1 / 6])
        gathered_again, rows = step(iterator)
        self.assertAllEqual(rows, [5, 1])
        self.assertLen(traces, 1)
        self.assertAllEqual(gathered["a"], features["a"][:6])
        self.assertAllEqual(gathered_again["b"], features["b"][6:])

    def test_get_next_as_optional_and_for_loop_in_a_function(self):
        strategy = ReplicaStrategy(_THREE, split=[2, 1, 1])
        distributed = strategy.experimental_distribute_dataset(tf.data.Dataset.range(9).batch(4))

        @tf.function
        def total_rows_and_sum():
            rows = tf.constant(0, tf.int64)
            total = tf.constant(0, tf.int64)
            for element in distributed:
                per_replica = strategy.run(
                    lambda x: (tf.size(x, tf.int64), tf.reduce_sum(x)), args=(element,)
                )
                rows += strategy.reduce("SUM", per_replica[0], axis=None)
                total += strategy.reduce("SUM", per_replica[1], axis=None)
            return rows, total

        self.assertAllEqual(total_rows_and_sum(), (9, 36))
        iterator = iter(distributed)
        optional = iterator.get_next_as_optional()
        self.assertTrue(optional.has_value())
        self.assertEqual(_rows_of(strategy, optional.get_value()), [2, 1, 1])
        for _ in range(2):
            next(iterator)
        self.assertFalse(iterator.get_next_as_optional().has_value())

    @parameterized.named_parameters(("eager", False), ("function", True))
    def test_distribute_datasets_from_function_resplits_the_replicas_batches(self, in_function):
        strategy = ReplicaStrategy(_TWO, split=[3, 1])

        def dataset_fn(context):
            batch = context.get_per_replica_batch_size(8)
            dataset = tf.data.Dataset.range(16)
            return dataset.shard(context.num_input_pipelines, context.input_pipeline_id).batch(
                batch
            )

        distributed = strategy.distribute_datasets_from_function(dataset_fn)
        iterator = iter(distributed)

        def step(iterator):
            element = next(iterator)
            return strategy.gather(element, axis=0), strategy.gather(
                strategy.run(lambda x: tf.shape(x)[:1], args=(element,)), axis=0
            )

        if in_function:
            step = tf.function(step)
        for start in (0, 8):
            rows_in_order, rows = step(iterator)
            self.assertAllEqual(rows, [6, 2])
            self.assertAllEqual(rows_in_order, np.arange(start, start + 8))

    def test_ragged_and_sparse_batches_split_by_rows(self):
        strategy = ReplicaStrategy(_TWO, split=[3, 1])
        ragged = tf.ragged.constant([[row] * (row % 3 + 1) for row in range(10)])
        sparse = tf.sparse.from_dense(np.arange(20).reshape(10, 2) % 3)
        dataset = tf.data.Dataset.from_tensor_slices((ragged, sparse)).batch(8)
        rows = []
        for ragged_parts, sparse_parts in strategy.experimental_distribute_dataset(dataset):
            ragged_parts = strategy.experimental_local_results(ragged_parts)
            sparse_parts = strategy.experimental_local_results(sparse_parts)
            rows.append([int(part.nrows()) for part in ragged_parts])
            self.assertEqual([int(part.dense_shape[0]) for part in sparse_parts], rows[-1])
            self.assertEqual(
                sum((part.to_list() for part in ragged_parts), []),
                ragged[8 * (len(rows) - 1) :][:8].to_list(),
            )
            self.assertAllEqual(
                tf.concat([tf.sparse.to_dense(part) for part in sparse_parts], 0),
                tf.sparse.to_dense(sparse)[8 * (len(rows) - 1) :][:8],
            )
        self.assertEqual(rows, [[6, 2], [2, 0]])

    def test_fetch_to_device_false_keeps_the_parts_on_the_host(self):
        strategy = ReplicaStrategy(_TWO, split=[3, 1])
        distributed = strategy.experimental_distribute_dataset(
            tf.data.Dataset.range(8).batch(8),
            tf.distribute.InputOptions(experimental_fetch_to_device=False),
        )
        element = next(iter(distributed))
        self.assertEqual(_devices_of(strategy, element), [0, 0])
        self.assertEqual(_rows_of(strategy, element), [6, 2])


def _custom_loop_weights(strategy, x, y, batch_size, steps):
    """Weights after `steps` SGD steps of a custom loop with compute_average_loss."""
    model = keras_testing.in_scope(strategy, _mlp)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    if strategy is None:
        iterator = iter(dataset)
    else:
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
    optimizer = model.optimizer

    def replica_step(inputs, labels):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(inputs) - labels), axis=1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    @tf.function
    def step(iterator):
        inputs, labels = next(iterator)
        if strategy is None:
            replica_step(inputs, labels)
        else:
            strategy.run(replica_step, args=(inputs, labels))

    for _ in range(steps):
        step(iterator)
    return model.get_weights()


class SplitNumericsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("two_three_to_one", _TWO, [3, 1], False),
        ("three_with_mirror_weights", _THREE, [1, 2, 3], True),
        ("four_with_the_host", _FOUR_WITH_HOST, [4, 1, 1, 2], False),
    )
    def test_custom_loop_with_compute_average_loss_matches_one_device(
        self, devices, split, mirror_weights
    ):
        x, y = _data(40)
        expected = _custom_loop_weights(None, x, y, batch_size=8, steps=5)
        strategy = ReplicaStrategy(devices, split=split, mirror_weights=mirror_weights)
        weights = _custom_loop_weights(strategy, x, y, batch_size=8, steps=5)
        for ours, reference in zip(weights, expected, strict=True):
            self.assertAllClose(ours, reference, atol=1e-5)

    @parameterized.named_parameters(
        ("numpy_two", _TWO, [3, 1], False, False, 8),
        ("numpy_three_mirror_weights", _THREE, [1, 2, 3], True, False, 7),
        ("dataset_four_with_host", _FOUR_WITH_HOST, [3, 1, 1, 1], False, True, 10),
        ("dataset_two_mirror_weights", _TWO, (0.9, 0.1), True, True, 6),
    )
    def test_keras_fit_evaluate_predict_match_one_device(
        self, devices, split, mirror_weights, use_dataset, batch_size
    ):
        # 43 rows: every epoch ends on a partial batch.
        x, y = _data(43)
        reference = _mlp()
        strategy = ReplicaStrategy(devices, split=split, mirror_weights=mirror_weights)
        model = keras_testing.in_scope(strategy, _mlp)
        if use_dataset:
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
            fit_args = {"x": data}
        else:
            fit_args = {"x": x, "y": y, "batch_size": batch_size, "shuffle": False}
        expected = reference.fit(**fit_args, epochs=2, verbose=0).history
        history = model.fit(**fit_args, epochs=2, verbose=0).history
        for key in expected:
            self.assertAllClose(history[key], expected[key], atol=1e-5, msg=key)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        self.assertAllClose(
            model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True),
            reference.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True),
            atol=1e-5,
        )
        self.assertAllClose(
            model.predict(x, batch_size=batch_size, verbose=0), reference(x), atol=1e-5
        )

    def test_keras_batch_smaller_than_the_replicas_and_sample_weights(self):
        x, y = _data(9)
        weights = np.linspace(0.5, 2.0, 9).astype("float32")
        reference = _mlp()
        model = keras_testing.in_scope(ReplicaStrategy(_THREE, split=[1, 1, 3]), _mlp)
        # Batches of 2 rows split 1, 0, 1; the last batch, of 1 row, 0, 0, 1.
        for trained in (reference, model):
            trained.fit(x, y, sample_weight=weights, batch_size=2, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        self.assertAllClose(model.predict(x, batch_size=2, verbose=0), reference(x), atol=1e-5)


def _tf_keras_mlp():
    tf_keras.utils.set_random_seed(7)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((_FEATURES,)),
            tf_keras.layers.Dense(4, activation="tanh"),
            tf_keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=tf_keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


class SplitModelsTest(tf.test.TestCase, parameterized.TestCase):
    def test_synchronized_batch_normalization_weighs_rows(self):
        x, y = _data(43)
        reference = _mlp(keras.layers.BatchNormalization(synchronized=True))
        model = keras_testing.in_scope(
            ReplicaStrategy(_TWO, split=[3, 1]),
            _mlp,
            keras.layers.BatchNormalization(synchronized=True),
        )
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    def test_tf_keras_fit_evaluate_predict_match_one_device(self):
        x, y = _data(43)
        reference = _tf_keras_mlp()
        strategy = ReplicaStrategy(_THREE, split=[3, 1, 2])
        model = keras_testing.in_scope(strategy, _tf_keras_mlp)
        expected = reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        self.assertAllClose(history, expected, atol=1e-5)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        self.assertAllClose(
            model.evaluate(x, y, batch_size=7, verbose=0),
            reference.evaluate(x, y, batch_size=7, verbose=0),
            atol=1e-5,
        )
        self.assertAllClose(model.predict(x, batch_size=7, verbose=0), reference(x), atol=1e-5)

    @parameterized.named_parameters(
        ("split_to_even", [3, 1], "even"),
        ("even_to_split", "even", [3, 1]),
        ("auto_to_no_strategy", "auto", None),
    )
    def test_checkpoints_hold_no_split(self, written_with, read_with):
        x, y = _data(16)
        writer = keras_testing.in_scope(ReplicaStrategy(_TWO, split=written_with), _mlp)
        writer.fit(x, y, batch_size=8, verbose=0)
        path = tf.train.Checkpoint(model=writer, optimizer=writer.optimizer).write(
            os.path.join(self.get_temp_dir(), "checkpoint")
        )
        self.assertEmpty(
            [name for name, _ in tf.train.list_variables(path) if "replica_split" in name]
        )
        strategy = None if read_with is None else ReplicaStrategy(_TWO, split=read_with)
        reader = keras_testing.in_scope(strategy, _mlp)
        reader.optimizer.build(reader.trainable_variables)
        tf.train.Checkpoint(model=reader, optimizer=reader.optimizer).read(path).assert_consumed()
        self.assertEqual(keras_testing.max_weight_difference(reader, writer), 0.0)
        if strategy is not None:
            self.assertEqual(strategy.split, (0.5, 0.5) if read_with == "even" else (0.75, 0.25))


# Made outside any strategy: read by `_sleep_per_row`, written by nothing.
_SLEEP_ANCHOR = tf.Variable(0.0, trainable=False)


@tf.function(autograph=False)
def _sleep_per_row(inputs, anchor, seconds_per_row):  # pylint: disable=unused-argument
    """`inputs`, after sleeping `seconds_per_row` per row of them.

    A function that takes a resource, so that tf.function does not chain it after the other
    replicas' sleeps (automatic control dependencies order stateful ops without resources).
    """
    slept = tf.py_function(
        lambda rows: np.float32(time.sleep(float(rows) * seconds_per_row) or 0.0),
        [tf.shape(inputs)[0]],
        tf.float32,
    )
    with tf.control_dependencies([slept]):
        return tf.identity(inputs)


class SlowerPerRow(keras.layers.Layer):
    """Simulates devices of different speeds: each replica sleeps its own time per row.

    Also counts its traces (calls while building a graph).
    """

    def __init__(self, seconds_per_row_by_replica, **kwargs):
        super().__init__(**kwargs)
        self.seconds_per_row_by_replica = seconds_per_row_by_replica
        self.traces = 0

    def call(self, inputs):
        if not tf.executing_eagerly():
            self.traces += 1
        context = tf.distribute.get_replica_context()
        replica = tf.get_static_value(context.replica_id_in_sync_group) if context else None
        if replica is None:
            return inputs
        return _sleep_per_row(inputs, _SLEEP_ANCHOR, self.seconds_per_row_by_replica[replica])


class _SplitAfterEachBatch(keras.callbacks.Callback):
    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy
        self.splits = [strategy.split]

    def on_train_batch_end(self, batch, logs=None):
        self.splits.append(self.strategy.split)


def _fit_with_speeds(split, seconds_per_row, steps, batch_size=32):
    """Fits on len(seconds_per_row) replicas; returns (strategy, model, splits after each step)."""
    strategy = ReplicaStrategy(virtual_devices.cpus(len(seconds_per_row) + 1)[1:], split=split)
    slower = SlowerPerRow(seconds_per_row)
    model = keras_testing.in_scope(strategy, _mlp, slower)
    x, y = _data(batch_size * steps)
    splits = _SplitAfterEachBatch(strategy)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[splits])
    return strategy, slower, splits.splits


class AutoSplitTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        # Seconds per row on each replica; the speed-proportional split is 3:1, and 4:4:2:1.
        ("two_replicas", (0.001, 0.003)),
        ("four_replicas", (0.001, 0.001, 0.002, 0.004)),
    )
    def test_moves_toward_speed_logs_each_change_once_and_never_retraces(self, seconds_per_row):
        speeds = [1 / seconds for seconds in seconds_per_row]
        expected = [speed / sum(speeds) for speed in speeds]
        with self.assertLogs("tensorflow", level=logging.INFO) as logs:
            strategy, slower, splits = _fit_with_speeds("auto", seconds_per_row, steps=40)
        changes = [index for index in range(1, len(splits)) if splits[index] != splits[index - 1]]
        logged = [line for line in logs.output if "split='auto'" in line]
        self.assertNotEmpty(changes)
        self.assertLen(logged, len(changes))
        self.assertAllClose(splits[0], [1 / len(speeds)] * len(speeds))
        # Settles within a few dozen steps near the speed ratio, and stays there (bounds
        # generous: a loaded machine's timing noise moves it a little).
        settled = next(
            (
                index
                for index, split in enumerate(splits)
                if np.abs(np.subtract(split, expected)).max() < 0.05
            ),
            None,
        )
        self.assertIsNotNone(settled, f"never within 0.05 of {expected}: {splits}")
        self.assertLess(settled, 25, f"slow to settle: {splits}")
        for split in splits[settled:]:
            self.assertAllClose(split, expected, atol=0.1, msg=f"splits: {splits}")
        self.assertAlmostEqual(sum(strategy.split), 1.0)
        # No retrace when the split changes: as many traces as under a fixed split.
        _, fixed_slower, fixed_splits = _fit_with_speeds(
            [1] * len(speeds), seconds_per_row, steps=40
        )
        self.assertLen(set(fixed_splits), 1)
        self.assertEqual(slower.traces, fixed_slower.traces)

    def test_custom_loop_in_a_function_moves_toward_speed(self):
        strategy = ReplicaStrategy(_TWO, split="auto")
        slower = SlowerPerRow((0.003, 0.001))
        model = keras_testing.in_scope(strategy, _mlp, slower)
        x, y = _data(32 * 30)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

        def replica_step(inputs, labels):
            with tf.GradientTape() as tape:
                per_example = tf.reduce_mean(tf.square(model(inputs) - labels), axis=1)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=32)
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        @tf.function
        def step(iterator):
            strategy.run(replica_step, args=next(iterator))

        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        for _ in range(30):
            step(iterator)
        self.assertBetween(strategy.split[1], 0.62, 0.88)
        self.assertEqual(step.experimental_get_tracing_count(), 1)

    def test_eager_run_measures_nothing_and_keeps_the_split(self):
        # Eager replicas meet at the first reduction together: nothing tells them apart.
        strategy = ReplicaStrategy(_TWO, split="auto")
        dataset = tf.data.Dataset.from_tensor_slices(np.ones([64, 1], "float32")).batch(8)
        for batch in strategy.experimental_distribute_dataset(dataset):
            strategy.run(
                lambda x: tf.distribute.get_replica_context().all_reduce("SUM", tf.reduce_sum(x)),
                args=(batch,),
            )
        self.assertAllClose(strategy.split, (0.5, 0.5), atol=0.02)

    def test_equal_speeds_keep_the_split_near_even(self):
        strategy, _, _ = _fit_with_speeds("auto", (0.002, 0.002, 0.002), steps=30, batch_size=30)
        for fraction in strategy.split:
            self.assertBetween(fraction, 0.25, 0.42)

    def test_a_replica_never_loses_its_whole_share(self):
        # Replica 1 is 50 times slower per row; its share stops at the floor, not zero.
        strategy, _, _ = _fit_with_speeds("auto", (0.0002, 0.01), steps=30)
        self.assertGreaterEqual(strategy.split[1], 0.05 - 1e-9)
        # Moves of at most LARGEST_MOVE per 4-step window: on its way down in 30 steps (the
        # floor itself: auto_split_test.py::test_floor_respected).
        self.assertLess(strategy.split[1], 0.5)


if __name__ == "__main__":
    virtual_devices.configure()
    tf.test.main()
