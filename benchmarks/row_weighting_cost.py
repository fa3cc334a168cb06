"""What weighing every row 1/B costs: Keras 3 `fit` under the even split, with and without it.

Since every model weighs each row 1/B by default (docs/numerics.md), each replica's loss is
multiplied by N * n_r / B inside the step. This measures that multiply's cost on one small
model: two models of the same weights under `ReplicaStrategy(split="even")` on /cpu:1 and
/cpu:2 (host /cpu:0), one traced with the weighting, one without it (the internal switch
`replica_strategy._row_weights._set_weighting`, for benchmarks and tests only). Each timed
window is one epoch of `fit` whose last batch is partial (so the weighting matters there);
windows alternate with and without, in pairs whose order flips each time, so machine noise
hits both alike. A window's rate is the batch over its 10th-percentile step time (steps the
shared machine slowed down do not count). The table gives rows/s per window, the median ratio
(with / without) and its range over the pairs.

    python -m benchmarks.row_weighting_cost                 # 9 pairs
    python -m benchmarks.row_weighting_cost --pairs=11 --rows=8193
"""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np
from absl import app, flags

import replica_strategy
from replica_strategy import _row_weights

_PAIRS = flags.DEFINE_integer("pairs", 9, "Interleaved (with, without) pairs of timed epochs.")
_ROWS = flags.DEFINE_integer("rows", 4097, "Rows per epoch (not a multiple of the batch).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch size.")

_FEATURES = 64
_CLASSES = 10
REPLICAS = ("/cpu:1", "/cpu:2")


def _model(strategy, weighting: bool):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((_FEATURES,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(_CLASSES),
            ]
        )
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    _row_weights._set_weighting(weighting)
    try:  # The switch is read when the step is traced: trace it now.
        model.fit(*_data(_BATCH.value * 2 + 1), batch_size=_BATCH.value, verbose=0)
    finally:
        _row_weights._set_weighting(True)
    return model


def _data(rows):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    return x, rng.integers(0, _CLASSES, size=(rows,))


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _rows_per_second(model, x, y) -> float:
    """A full batch's rows over the epoch's 10th-percentile step time: the undisturbed steps.

    On a shared machine most steps lose time to other processes; the fastest tenth of them
    measures the step itself (the same work every step).
    """
    steps = _StepTimes()
    model.fit(x, y, batch_size=_BATCH.value, epochs=1, shuffle=False, verbose=0, callbacks=[steps])
    return _BATCH.value / statistics.quantiles(steps.seconds, n=10)[0]


def measure(pairs: int) -> list[tuple[float, float]]:
    """(with, without) rows/s for each pair of timed epochs."""
    strategy = replica_strategy.ReplicaStrategy(list(REPLICAS), split="even")
    models = {True: _model(strategy, True), False: _model(strategy, False)}
    x, y = _data(_ROWS.value)
    for model in models.values():  # Warm-up epoch each.
        _rows_per_second(model, x, y)
    results = []
    for pair in range(pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        rates = {weighting: _rows_per_second(models[weighting], x, y) for weighting in order}
        results.append((rates[True], rates[False]))
    return results


def table(results: list[tuple[float, float]]) -> str:
    lines = ["| pair | with weighting (rows/s) | without (rows/s) | ratio |", "|---|---|---|---|"]
    ratios = []
    for index, (with_rate, without_rate) in enumerate(results, 1):
        ratios.append(with_rate / without_rate)
        lines.append(f"| {index} | {with_rate:,.0f} | {without_rate:,.0f} | {ratios[-1]:.3f} |")
    lines.append(
        f"\nratio with / without: median {statistics.median(ratios):.3f} "
        f"[{min(ratios):.3f}-{max(ratios):.3f}] over {len(ratios)} pairs; "
        f"pooled {sum(r[0] for r in results) / sum(r[1] for r in results):.3f}"
    )
    return "\n".join(lines)


def main(argv):
    del argv
    replica_strategy.logical_devices.split_cpu(len(REPLICAS) + 1)
    print(table(measure(_PAIRS.value)))


if __name__ == "__main__":
    app.run(main)
