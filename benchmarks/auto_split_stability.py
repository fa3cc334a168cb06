"""How steady `split="auto"` holds, and what it costs: a short table on logical CPUs.

THIS IS A SIMULATION, as benchmarks/mixed_speeds.py: each replica sleeps, in every forward pass,
a fixed time per step plus a time per row (`tf.numpy_function(time.sleep)`), standing for a
device with that fixed cost and speed. Rows of the table:
- equal devices whose fixed cost is at least half of the step (the share is measured: step time
  at 1 row per replica over step time at the batch used), Keras 3 `fit` and a custom loop (a
  `tf.function` that all-reduces the row count before the forward pass): the range of replica
  0's fraction from step 20 on;
- replica 1 three times slower per row: the first step from which replica 0's fraction is in
  [0.70, 0.80], and how far it moves after;
- `auto`'s own cost: rows/s of `auto` over `split=[1, 1]`, equal devices, interleaved pairs.

    python -m benchmarks.auto_split_stability            # about two minutes
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import replica_strategy

_RUNS = flags.DEFINE_integer("runs", 3, "Runs of each case.")
_STEPS = flags.DEFINE_integer("steps", 220, "Steps per run (the first 20 are not judged).")
_PAIRS = flags.DEFINE_integer("pairs", 5, "Interleaved auto / [1, 1] pairs for the cost.")

REPLICAS = ("/cpu:1", "/cpu:2")
BATCH = 64
JUDGED_FROM = 20
EQUAL = dict(per_step=0.004, per_row=(0.00005, 0.00005))
THREE_TIMES = dict(per_step=0.0, per_row=(0.0002, 0.0006))


def _sleep_then_return(inputs, seconds):
    time.sleep(float(seconds))
    return inputs


class SimulatedDeviceTime(keras.layers.Layer):
    def __init__(self, per_step, per_row, **kwargs):
        super().__init__(**kwargs)
        self.per_step, self.per_row = per_step, per_row

    def call(self, inputs):
        context = tf.distribute.get_replica_context()
        replica = tf.get_static_value(context.replica_id_in_sync_group) if context else None
        if replica is None:
            return inputs
        rows = tf.cast(tf.shape(inputs)[0], tf.float64)
        seconds = self.per_step + self.per_row[replica] * rows
        # stateful=False: not chained after the other replica's sleep (they run side by side).
        slept = tf.numpy_function(
            _sleep_then_return, [inputs, seconds], Tout=inputs.dtype, stateful=False
        )
        return tf.ensure_shape(slept, inputs.shape)


def _model(strategy, per_step, per_row):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                SimulatedDeviceTime(per_step, per_row),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="sgd", loss="mse")
    return model


def _data(steps, batch=BATCH):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 8)).astype("float32")
    return x, x[:, :1].copy()


class _Splits(keras.callbacks.Callback):
    def __init__(self, strategy):
        super().__init__()
        self.strategy, self.splits, self.times = strategy, [], []

    def on_train_batch_end(self, batch, logs=None):
        self.splits.append(self.strategy.split[0])
        self.times.append(time.perf_counter())


def fit(split, steps, per_step, per_row, batch=BATCH):
    """Replica 0's fraction after each step, and rows/s, of Keras `fit`."""
    strategy = replica_strategy.ReplicaStrategy(list(REPLICAS), "/cpu:0", split=split)
    model = _model(strategy, per_step, per_row)
    x, y = _data(steps, batch)
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0)  # warm-up
    splits = _Splits(strategy)
    model.fit(x, y, batch_size=batch, verbose=0, callbacks=[splits])
    # Rows/s between step ends, without fit's own start and end.
    return splits.splits, (steps - 1) * batch / (splits.times[-1] - splits.times[0])


def custom_loop(split, steps, per_step, per_row, batch=BATCH):
    """Replica 0's fraction after each step, and rows/s, of a custom `tf.function` loop."""
    strategy = replica_strategy.ReplicaStrategy(list(REPLICAS), "/cpu:0", split=split)
    model = _model(strategy, per_step, per_row)
    x, y = _data(steps + 2, batch)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    def replica_step(features, labels):
        context = tf.distribute.get_replica_context()
        rows = context.all_reduce("SUM", tf.cast(tf.shape(features)[0], tf.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(features) - labels)) / rows
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    @tf.function
    def step(iterator):
        strategy.run(replica_step, args=next(iterator))

    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    step(iterator)
    step(iterator)  # warm-up
    splits = []
    start = time.perf_counter()
    for _ in range(steps):
        step(iterator)
        splits.append(strategy.split[0])
    return splits, steps * batch / (time.perf_counter() - start)


def _fixed_share(trainer):
    """Step time at one row per replica over step time at BATCH, split [1, 1], equal devices."""
    _, small = trainer([1, 1], 60, batch=2, **EQUAL)
    _, full = trainer([1, 1], 60, **EQUAL)
    return (2 / small) / (BATCH / full)


def main(argv: Sequence[str]) -> None:
    del argv
    tf.get_logger().setLevel("WARNING")
    print(f"load: {os.getloadavg()}")
    print("| case | trainer | run | replica 0's fraction from step 20 (min–max) | result |")
    print("|---|---|---|---|---|")
    for name, trainer in (("fit", fit), ("custom loop", custom_loop)):
        share = _fixed_share(trainer)
        for run in range(_RUNS.value):
            splits, _ = trainer("auto", _STEPS.value, **EQUAL)
            judged = splits[JUDGED_FROM:]
            ok = 0.35 <= min(judged) and max(judged) <= 0.65
            print(
                f"| equal, fixed cost {share:.0%} of the step | {name} | {run} | "
                f"{min(judged):.3f}–{max(judged):.3f} | {'PASS' if ok else 'FAIL'} |"
            )
    for name, trainer in (("fit", fit), ("custom loop", custom_loop)):
        for run in range(_RUNS.value):
            splits, _ = trainer("auto", _STEPS.value, **THREE_TIMES)
            inside = [step for step, value in enumerate(splits) if 0.70 <= value <= 0.80]
            first = inside[0] if inside else None
            after = splits[first:] if first is not None else []
            largest_move = max(
                (abs(b - a) for a, b in zip(after, after[1:], strict=False)), default=0.0
            )
            late = splits[50:]
            ok = (
                first is not None
                and first < 50
                and largest_move <= 0.05
                and max(late) - min(late) <= 0.05
                and 0.70 <= min(late)
                and max(late) <= 0.80
            )
            print(
                f"| replica 1 3x slower per row | {name} | {run} | "
                f"{min(splits[JUDGED_FROM:]):.3f}–{max(splits[JUDGED_FROM:]):.3f} | "
                f"in [0.70, 0.80] from step {first}; largest move after {largest_move:.3f}; "
                f"steps 50+: {min(late):.3f}–{max(late):.3f}: {'PASS' if ok else 'FAIL'} |"
            )
    ratios = []
    for _ in range(_PAIRS.value):
        _, auto = fit("auto", 100, **EQUAL)
        _, fixed = fit([1, 1], 100, **EQUAL)
        ratios.append(auto / fixed)
    print(
        f"\nauto / split=[1, 1] rows/s, fit, equal devices, {_PAIRS.value} interleaved pairs: "
        f"median {statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})"
    )
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    tf.config.threading.set_inter_op_parallelism_threads(3 + (os.cpu_count() or 1))
    replica_strategy.logical_devices.split_cpu(len(REPLICAS) + 1)
    app.run(main)
