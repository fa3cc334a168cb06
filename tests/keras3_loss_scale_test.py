"""Loss scaling decides from the whole step under `ReplicaStrategy` (`_keras3_loss_scale`).

A batch whose gradients overflow on one replica only is skipped on every replica and halves
the loss scale once, as on one device: the skipped steps, the loss scales and the weights
follow one device's, in `fit` and in custom loops, in every placement and split. Keras 3's
own `LossScaleOptimizer` reads replica 0's gradients only, and under MirroredStrategy writes
inf into every weight (`test_mirrored_strategy_applies_an_overflow_on_replica_1`).

The overflow: one row of a batch holds `_HUGE` in its features. float16 holds it, but its
gradients (the row times the scaled loss's gradient) overflow float16, on whichever replica
holds that row, at every loss scale these tests reach.
"""

import keras_testing
import placements

# isort: split

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized

from replica_strategy import ReplicaStrategy, batching, exact_uneven_batches, register_tf_keras

_FEATURES = 4
_BATCH = 8
_HUGE = 1e3
# float16 rounds each replica's gradient sum apart from one device's whole-batch sum: the
# weights then differ from one device's by up to 9.8e-5 here (measured: every test below, in
# every placement and split).
_FLOAT16_TOLERANCE = 3e-4
_SPLITS = {"even": "even", "weights": [3, 1]}


class _ShiftByBatchMean(keras.layers.Layer):
    """Adds `shift` times the batch's mean of the last feature (1 in every row).

    The mean is 1 over any rows, so every split computes what one device does; over no rows
    it is NaN, and so is the gradient of `shift` on a replica given no rows.
    """

    def build(self, input_shape):
        self.shift = self.add_weight(shape=(), initializer="zeros", name="shift")

    def call(self, inputs):
        return inputs + self.shift * keras.ops.mean(inputs[:, -1])


def _model(optimizer_kind):
    """`optimizer_kind`: "explicit" (a `LossScaleOptimizer` given to `compile`) or "compiled"
    (what `compile` builds under "mixed_float16")."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((_FEATURES,)),
            _ShiftByBatchMean(),
            keras.layers.Dense(3),
            keras.layers.Dense(1),
        ]
    )
    optimizer = keras.optimizers.SGD(0.1)
    if optimizer_kind == "explicit":
        # A small scale that grows every 2 finite steps: the growth is followed too.
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=2.0**8, dynamic_growth_steps=2
        )
    model.compile(optimizer=optimizer, loss="mse")
    if optimizer_kind == "compiled":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    return model


def _data(batches, split=(0.5, 0.5)):
    """Rows for `batches`, one entry per batch: (rows, replica whose first row overflows)."""
    rng = np.random.default_rng(0)
    parts = []
    for rows, overflowing_replica in batches:
        x = np.ones((rows, _FEATURES), "float32")
        x[:, :-1] = 0.5 * rng.normal(size=(rows, _FEATURES - 1))
        if overflowing_replica is not None:
            sizes = batching.weighted_split_sizes(rows, split)
            x[sum(sizes[:overflowing_replica]), :-1] = _HUGE
        parts.append(x)
    x = np.concatenate(parts)
    return x, rng.normal(size=(len(x), 1)).astype("float32")


class _LossScaleRecord(keras.callbacks.Callback):
    """`_record` after each batch."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(_record(self.model.optimizer))


def _record(optimizer):
    """(steps applied so far, loss scale): a skipped step leaves the first unchanged."""
    return int(optimizer.iterations.numpy()), float(optimizer.dynamic_scale.numpy())


def _skipped(records):
    """Which steps were skipped, from the applied-step counts after each."""
    counts = [0] + [applied for applied, _ in records]
    return [after == before for before, after in zip(counts, counts[1:])]


def _fit(strategy, optimizer_kind, x, y):
    model = keras_testing.in_scope(strategy, _model, optimizer_kind)
    if isinstance(strategy, ReplicaStrategy):
        exact_uneven_batches(model)  # Each row weighs 1/B, on the even split's 1, 0 rows too.
    record = _LossScaleRecord()
    model.fit(x, y, batch_size=_BATCH, shuffle=False, verbose=0, callbacks=[record])
    return model, record.steps


def _custom_loop(strategy, optimizer_kind, x, y, use_function=True):
    """`fit`'s epoch as a custom loop: `scale_loss`, then `apply_gradients` in `strategy.run`."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = _model(optimizer_kind)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(_BATCH)

    def step(features, labels, batch_size):
        def replica_step(features, labels):
            with tf.GradientTape() as tape:
                predictions = tf.cast(model(features, training=True), tf.float32)
                per_row = keras.losses.mean_squared_error(labels, predictions)
                loss = tf.reduce_sum(per_row) / batch_size  # Every row weighs 1/B, on any split.
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        strategy.run(replica_step, args=(features, labels))

    if use_function:
        step = tf.function(step)
    records = []
    for batch_size, batch in zip(
        [len(x[start : start + _BATCH]) for start in range(0, len(x), _BATCH)],
        strategy.experimental_distribute_dataset(dataset),
        strict=True,
    ):
        step(*batch, tf.constant(batch_size, tf.float32))
        records.append(_record(optimizer))
    return model, records


def _use_policy(test, name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    test.addCleanup(keras.mixed_precision.set_global_policy, previous)


def _one_device(runner, optimizer_kind, batches, split):
    """`runner` (`_fit`, `_custom_loop`) on one device: weights and records, computed once."""
    key = (runner, optimizer_kind, tuple(batches), tuple(split))
    if key not in _ONE_DEVICE_RUNS:
        x, y = _data(batches, split)
        model, records = runner(None, optimizer_kind, x, y)
        _ONE_DEVICE_RUNS[key] = model.get_weights(), records
    return _ONE_DEVICE_RUNS[key]


_ONE_DEVICE_RUNS = {}

# Overflows on replica 1, then replica 0, then on replica 1 of a partial last batch, with
# finite steps between (the explicit optimizer's scale grows after 2 of them).
_OVERFLOW_ON_EACH_REPLICA = ((8, 1), (8, None), (8, None), (8, 0), (8, None), (4, 1))
_ONE_DEVICE_SKIPS = [True, False, False, True, False, True]
# The last batch's one row goes to replica 0, overflowing or not; replica 1 gets no rows.
_EMPTY_REPLICA = {False: ((8, None), (1, None)), True: ((8, None), (1, 0))}


@placements.across_placements()
class LossScaleTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        _use_policy(self, "mixed_float16")

    def _assert_follows_one_device(self, runner, optimizer_kind, batches, strategy, **options):
        weights, records = _one_device(runner, optimizer_kind, batches, strategy.split)
        x, y = _data(batches, strategy.split)
        model, ours = runner(strategy, optimizer_kind, x, y, **options)
        self.assertEqual(ours, records)
        for weight in model.get_weights():
            self.assertTrue(np.all(np.isfinite(weight)))
        difference = max(
            float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), weights, strict=True)
        )
        self.assertLess(difference, _FLOAT16_TOLERANCE)
        return records

    @parameterized.named_parameters(
        ("explicit_even", "explicit", "even"),
        ("compiled_weights", "compiled", "weights"),
    )
    def test_fit_skips_the_steps_one_device_skips(self, optimizer_kind, split):
        strategy = self.replica_strategy(2, split=_SPLITS[split])
        records = self._assert_follows_one_device(
            _fit, optimizer_kind, _OVERFLOW_ON_EACH_REPLICA, strategy
        )
        self.assertEqual(_skipped(records), _ONE_DEVICE_SKIPS)

    @parameterized.named_parameters(
        ("explicit_weights", "explicit", "weights"),
        ("compiled_even", "compiled", "even"),
    )
    def test_custom_loop_skips_the_steps_one_device_skips(self, optimizer_kind, split):
        strategy = self.replica_strategy(2, split=_SPLITS[split])
        records = self._assert_follows_one_device(
            _custom_loop, optimizer_kind, _OVERFLOW_ON_EACH_REPLICA, strategy
        )
        self.assertEqual(_skipped(records), _ONE_DEVICE_SKIPS)

    @parameterized.named_parameters(
        ("finite_even", False, "even"),
        ("overflowing_weights", True, "weights"),
    )
    def test_a_replica_with_no_rows_counts_as_finite(self, overflows, split):
        # Replica 1, given no rows, computes a NaN gradient for `shift` (a mean over no rows):
        # the step is skipped only when replica 0's row overflows.
        strategy = self.replica_strategy(2, split=_SPLITS[split])
        records = self._assert_follows_one_device(
            _fit, "explicit", _EMPTY_REPLICA[overflows], strategy
        )
        self.assertEqual(_skipped(records), [False, overflows])

    @placements.default_placement_only
    def test_an_eager_custom_loop(self):
        # Eagerly, the replica with rows and the one without take different paths to the
        # all-reduce; both reach it and `merge_call` with the same structures.
        self._assert_follows_one_device(
            _custom_loop,
            "explicit",
            _EMPTY_REPLICA[False],
            self.replica_strategy(2),
            use_function=False,
        )

    @placements.default_placement_only
    def test_the_auto_split(self):
        # Wherever "auto" moves the rows, each one weighs 1/B and an overflow anywhere skips.
        self._assert_follows_one_device(
            _fit, "compiled", _OVERFLOW_ON_EACH_REPLICA, self.replica_strategy(2, split="auto")
        )

    @placements.default_placement_only
    def test_mirrored_strategy_applies_an_overflow_on_replica_1(self):
        # What the adapter fixes, still Keras' behaviour under MirroredStrategy: replica 0's
        # gradients are finite, so the step is applied and the summed inf reaches the weights.
        x, y = _data([(8, 1)])
        model, records = _fit(self.mirrored_strategy(2), "explicit", x, y)
        self.assertEqual(_skipped(records), [False])
        self.assertFalse(all(np.all(np.isfinite(weight)) for weight in model.get_weights()))

    @placements.default_placement_only
    def test_one_replica_runs_keras_own_code(self):
        weights, records = _one_device(_fit, "explicit", _OVERFLOW_ON_EACH_REPLICA, (0.5, 0.5))
        x, y = _data(_OVERFLOW_ON_EACH_REPLICA)
        model, ours = _fit(ReplicaStrategy(["/cpu:1"]), "explicit", x, y)
        self.assertEqual(ours, records)
        for ours, theirs in zip(model.get_weights(), weights, strict=True):
            self.assertAllClose(ours, theirs, atol=1e-7)


def _regression_data(rows=32):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 3)).astype("float32")
    # Small targets: at the default loss scale (32768) one device's float16 gradients stay
    # finite, so that no step is skipped on one device and applied on the replicas (whose
    # gradients, each over a part of the batch, overflow later: see docs/numerics.md).
    return x, (0.2 * x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1).astype("float32")


def _mixed_precision_mlp():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


# The largest weight difference from one device after 2 epochs of 4 steps on 2 replicas, in
# every placement: ReplicaStrategy's and MirroredStrategy's (ReductionToOneDevice and its
# default collective all-reduce alike) are the same numbers, 3.45e-4 with "mixed_bfloat16"
# (8 bits of mantissa) and 2.20e-5 with "mixed_float16"; the losses differ by 4.9e-4 and 2.7e-5.
_MIXED_PRECISION_TOLERANCE = {"mixed_bfloat16": 1e-3, "mixed_float16": 1e-4}


def _fit_mixed_precision(strategy):
    """The weights and the epoch losses of `_mixed_precision_mlp`'s 2 epochs under `strategy`."""
    model = keras_testing.in_scope(strategy, _mixed_precision_mlp)
    x, y = _regression_data()
    losses = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    return model, losses


@placements.across_placements()
class MixedPrecisionTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("bfloat16", "mixed_bfloat16"), ("float16", "mixed_float16"))
    def test_fit_follows_one_device_as_mirrored_strategy_does(self, policy):
        _use_policy(self, policy)
        if policy not in _ONE_DEVICE_RUNS:
            model, losses = _fit_mixed_precision(None)
            _ONE_DEVICE_RUNS[policy] = model.get_weights(), losses
        weights, one_device_losses = _ONE_DEVICE_RUNS[policy]
        model, losses = _fit_mixed_precision(self.replica_strategy(2))
        self.assertEqual(model.layers[0].compute_dtype, policy.removeprefix("mixed_"))
        tolerance = _MIXED_PRECISION_TOLERANCE[policy]
        self.assertAllClose(losses, one_device_losses, atol=tolerance)
        for ours, theirs in zip(model.get_weights(), weights, strict=True):
            self.assertAllClose(ours, theirs, atol=tolerance, rtol=0)
        if policy == "mixed_float16":
            self.assertEqual(float(model.optimizer.dynamic_scale), 32768.0)  # Nothing skipped.


def _tf_keras_model():
    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((_FEATURES,)),
            tf_keras.layers.Dense(3),
            tf_keras.layers.Dense(1),
        ]
    )
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(
        tf_keras.optimizers.SGD(0.1), initial_scale=2.0**8, dynamic_growth_steps=2
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


class TfKerasLossScaleTest(tf.test.TestCase):
    def test_tf_keras_skips_the_steps_one_device_skips(self):
        # tf_keras sums the gradients before it checks them: an overflow on any replica skips.
        register_tf_keras()
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
        self.addCleanup(tf_keras.mixed_precision.set_global_policy, "float32")
        x, y = _data(_OVERFLOW_ON_EACH_REPLICA)
        results = []
        for strategy in (None, placements.replica_strategy(placements.DEFAULT, 2)):
            model = keras_testing.in_scope(strategy, _tf_keras_model)
            scales = []
            for start in range(0, len(x), _BATCH):
                model.train_on_batch(x[start : start + _BATCH], y[start : start + _BATCH])
                scales.append(float(model.optimizer.loss_scale))
            results.append((model, scales))
        (reference, reference_scales), (model, scales) = results
        self.assertEqual(scales, reference_scales)
        self.assertEqual(scales, [128.0, 128.0, 256.0, 128.0, 128.0, 64.0])
        for weight in model.get_weights():
            self.assertTrue(np.all(np.isfinite(weight)))
        self.assertLess(keras_testing.max_weight_difference(model, reference), _FLOAT16_TOLERANCE)


if __name__ == "__main__":
    tf.test.main()
