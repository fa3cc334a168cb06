"""`split="auto"`'s busy-time measurement and controller (`_auto_split`), fed timings.

The controller and the busy-time arithmetic are pure functions: here they run eagerly on
simulated timings, deterministically. The end-to-end runs (simulated slower devices, as in
uneven_split_test.py) assert broad bounds only.
"""

import time

import numpy as np

import keras_testing
import virtual_devices

# isort: split

import tensorflow as tf
from absl.testing import parameterized

from replica_strategy import ReplicaStrategy, _auto_split

_BATCH = 64


def _simulate(steps, fixed, per_row, noise=0.0, state=None, seed=0):
    """Runs the controller for `steps` steps of a simulated pair; returns the fast fractions.

    Replica i is busy `fixed[i] + per_row[i] * rows_i` seconds, times (1 + uniform noise).
    """
    rng = np.random.default_rng(seed)
    state = state or _auto_split.initial_state(len(per_row))
    fractions = []
    for _ in range(steps):
        rows = _rows(state.fractions)
        busy = [
            (fixed[i] + per_row[i] * rows[i]) * (1 + rng.uniform(-noise, noise))
            for i in range(len(rows))
        ]
        state = _numpy(_auto_split.adapt(state, busy, rows))
        fractions.append(float(state.fractions[0]))
    return fractions, state


def _rows(fractions):
    rows = np.floor(np.asarray(fractions) * _BATCH).astype(int)
    rows[0] += _BATCH - rows.sum()
    return rows


def _numpy(state):
    return _auto_split.ControllerState(*(np.asarray(value) for value in state))


class ControllerTest(tf.test.TestCase):
    def test_equal_devices_with_a_large_fixed_cost_stay_even(self):
        # Fixed cost 10 ms against 0.1 ms per row: a replica with fewer rows is not "slower".
        fractions, _ = _simulate(200, fixed=(0.01, 0.01), per_row=(1e-4, 1e-4), noise=0.03)
        self.assertAllClose(fractions, [0.5] * 200)

    def test_three_times_slower_per_row_converges_to_three_quarters_and_holds(self):
        fractions, _ = _simulate(300, fixed=(0.002, 0.002), per_row=(1e-4, 3e-4), noise=0.03)
        settled = next(step for step, value in enumerate(fractions) if 0.70 <= value <= 0.80)
        self.assertLess(settled, 50, fractions)
        after = fractions[settled:]
        self.assertLessEqual(max(after) - min(after), 0.05, after)
        self.assertAllInRange(after, 0.70, 0.80)

    def test_without_fixed_cost_the_split_is_the_speed_ratio(self):
        fractions, _ = _simulate(60, fixed=(0.0, 0.0), per_row=(1e-4, 3e-4))
        self.assertAllClose(fractions[-1], 0.75, atol=0.02)

    def test_noise_within_the_deadband_does_not_move_it(self):
        state = _auto_split.initial_state(2)._replace(fractions=np.array([0.6, 0.4]))
        rng = np.random.default_rng(1)
        for _ in range(100):
            busy = 0.01 * (1 + rng.uniform(-0.04, 0.04, size=2))
            state = _numpy(_auto_split.adapt(state, busy, [38, 26]))
        self.assertAllClose(state.fractions, [0.6, 0.4])

    def test_floor_respected(self):
        fractions, state = _simulate(200, fixed=(0.0, 0.0), per_row=(1e-5, 1e-2))
        floor = _auto_split.FLOOR_OF_EVEN_SHARE / 2
        self.assertAllGreaterEqual(state.fractions, floor - 1e-12)
        self.assertAllClose(1 - fractions[-1], floor)

    def test_warm_up_step_dropped(self):
        state = _auto_split.initial_state(2)
        state = _numpy(_auto_split.adapt(state, [10.0, 0.001], [32, 32]))  # tracing, say
        self.assertEqual(state.warm_up_left, 0)
        self.assertEqual(state.measured, 0)
        self.assertAllEqual(state.window_busy, [0.0, 0.0])
        for _ in range(10):
            state = _numpy(_auto_split.adapt(state, [0.01, 0.01], [32, 32]))
        self.assertAllClose(state.fractions, [0.5, 0.5])

    def test_a_step_with_a_replica_without_rows_is_not_counted(self):
        state = _numpy(_auto_split.adapt(_auto_split.initial_state(2), [1.0, 1.0], [32, 32]))
        for _ in range(10):
            state = _numpy(_auto_split.adapt(state, [0.01, 0.001], [3, 0]))
        self.assertEqual(state.measured, 0)
        self.assertAllClose(state.fractions, [0.5, 0.5])

    def test_moves_toward_equal_busy_time_damped_and_capped(self):
        state = _numpy(_auto_split.adapt(_auto_split.initial_state(2), [1.0, 1.0], [32, 32]))
        for _ in range(_auto_split.MEASUREMENTS_BEFORE_MOVING):
            state = _numpy(_auto_split.adapt(state, [0.010, 0.012], [32, 32]))
        # Imbalance 0.002 / 0.011 > DEADBAND: each share times (0.011 / busy) ** DAMPING.
        expected = np.power([1.1, 1.1 / 1.2], _auto_split.DAMPING) * 0.5
        self.assertAllClose(state.fractions, expected / expected.sum())
        self.assertEqual(state.measured, 0)
        self.assertTrue(state.moving)
        # The same busy times at the new shares: rows changed nothing, so the move is undone.
        for _ in range(_auto_split.MEASUREMENTS_BEFORE_MOVING):
            state = _numpy(_auto_split.adapt(state, [0.010, 0.012], [34, 30]))
        self.assertAllClose(state.fractions, [0.5, 0.5])
        self.assertLess(state.response, _auto_split.MIN_RESPONSE)
        # No move until the response estimate recovers.
        for _ in range(_auto_split.MEASUREMENTS_BEFORE_MOVING):
            state = _numpy(_auto_split.adapt(state, [0.010, 0.012], [32, 32]))
        self.assertAllClose(state.fractions, [0.5, 0.5])

    def test_a_move_changes_no_share_by_more_than_largest_move(self):
        state = _numpy(_auto_split.adapt(_auto_split.initial_state(2), [1.0, 1.0], [32, 32]))
        for _ in range(_auto_split.MEASUREMENTS_BEFORE_MOVING):
            state = _numpy(_auto_split.adapt(state, [0.001, 0.1], [32, 32]))
        self.assertAllClose(state.fractions, [0.5 + _auto_split.LARGEST_MOVE, 0.5 - 0.05])

    def test_a_fixed_bias_rows_do_not_change_holds_near_even(self):
        # Replica 0 is busier by a fixed 20% whatever its rows (say, host work it alone does).
        fractions, _ = _simulate(300, fixed=(0.0012, 0.001), per_row=(1e-7, 1e-7), noise=0.03)
        self.assertAllInRange(fractions, 0.35, 0.65)


class BusyTimesTest(tf.test.TestCase):
    def test_waits_excluded_over_the_segments(self):
        # Replica 0 computes 1 s, replica 1 3 s, before a row count (point 1) reduced at 3.1;
        # then 2 s and 1 s before the gradients (point 2, result at 5.5); outputs at 6 and 5.8.
        busy = _auto_split.busy_times(
            starts=[0.0, 0.0],
            synchronizations=[([1.0, 3.0], 3.1), ([5.1, 4.1], 5.5)],
            ends=[6.0, 5.8],
        )
        self.assertAllClose(busy, [1.0 + 2.0 + 0.5, 3.0 + 1.0 + 0.3])

    def test_a_step_without_synchronization_point(self):
        busy = _auto_split.busy_times(starts=[1.0, 2.0], synchronizations=[], ends=[3.0, 3.5])
        self.assertAllClose(busy, [2.0, 1.5])

    def test_values_ready_before_the_previous_result_count_nothing(self):
        busy = _auto_split.busy_times(
            starts=[0.0, 0.0], synchronizations=[([1.0, 2.0], 2.5)], ends=[2.0, None]
        )
        self.assertAllClose(busy, [1.0, 2.0])


# Made outside any strategy: read by `_sleep`, written by nothing (see uneven_split_test.py).
_SLEEP_ANCHOR = tf.Variable(0.0, trainable=False)


@tf.function(autograph=False)
def _sleep(inputs, anchor, seconds_per_step, seconds_per_row):  # pylint: disable=unused-argument
    slept = tf.py_function(
        lambda rows: np.float32(
            time.sleep(seconds_per_step + float(rows) * seconds_per_row) or 0.0
        ),
        [tf.shape(inputs)[0]],
        tf.float32,
    )
    with tf.control_dependencies([slept]):
        return tf.identity(inputs)


def _slow_replicas(inputs, seconds_per_step, seconds_per_row):
    context = tf.distribute.get_replica_context()
    replica = tf.get_static_value(context.replica_id_in_sync_group) if context else None
    if replica is None:  # Keras' build, outside any replica
        return inputs
    return _sleep(inputs, _SLEEP_ANCHOR, seconds_per_step, seconds_per_row[replica])


class EndToEndTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("equal_with_fixed_cost", 0.004, (0.00005, 0.00005), 0.35, 0.65),
        ("replica_1_three_times_slower", 0.0, (0.0006, 0.0018), 0.65, 0.85),
    )
    def test_custom_loop_reducing_the_row_count_first(self, per_step, per_row, low, high):
        strategy = ReplicaStrategy(virtual_devices.cpus(3)[1:], split="auto")
        with strategy.scope():
            weight = tf.Variable(tf.ones([3, 1]))
            optimizer = tf.keras.optimizers.SGD(0.01)
        dataset = tf.data.Dataset.from_tensor_slices(tf.ones([64 * 80, 3])).batch(64)

        def replica_step(x):
            context = tf.distribute.get_replica_context()
            rows = context.all_reduce("SUM", tf.cast(tf.shape(x)[0], tf.float32))
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(_slow_replicas(x, per_step, per_row) @ weight) / rows
            optimizer.apply_gradients([(tape.gradient(loss, weight), weight)])
            return loss

        @tf.function
        def step(iterator):
            return strategy.run(replica_step, args=(next(iterator),))

        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        for _ in range(80):
            step(iterator)
        self.assertBetween(strategy.split[0], low, high, strategy.split)
        self.assertEqual(step.experimental_get_tracing_count(), 1)

    def test_keras_fit_equal_replicas_with_a_synchronized_batch_norm(self):
        strategy = ReplicaStrategy(virtual_devices.cpus(3)[1:], split="auto")

        def model_fn():
            model = tf.keras.Sequential(
                [
                    tf.keras.Input((3,)),
                    tf.keras.layers.Dense(4),
                    tf.keras.layers.BatchNormalization(synchronized=True),
                    tf.keras.layers.Lambda(lambda x: _slow_replicas(x, 0.004, (5e-5, 5e-5))),
                    tf.keras.layers.Dense(1),
                ]
            )
            model.compile(optimizer="sgd", loss="mse")
            return model

        model = keras_testing.in_scope(strategy, model_fn)
        x = np.ones([64 * 40, 3], "float32")
        model.fit(x, x[:, :1], batch_size=64, epochs=1, verbose=0)
        self.assertAllInRange(strategy.split, 0.35, 0.65)


if __name__ == "__main__":
    virtual_devices.configure()
    tf.test.main()
