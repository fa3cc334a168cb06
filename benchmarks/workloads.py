"""One model under one contestant, timed in windows of steps: `fit`, `predict`, a custom loop.

Every window excludes tracing (a warm-up window runs first) and the per-call set-up of `fit` and
`predict` (iterators, callbacks): a callback stamps the end of each batch and a window of K steps
is the time from the end of its first batch to the end of its K + 1-th.
"""

from __future__ import annotations

import dataclasses
import time

import tensorflow as tf

from benchmarks import contestants as contestants_lib

FIT = "fit"
PREDICT = "predict"
CUSTOM_LOOP = "custom_loop"
MODES = (FIT, PREDICT, CUSTOM_LOOP)


@dataclasses.dataclass
class Cell:
    """The measurements of one contestant in one mode on one model.

    Attributes:
        contestant: Who ran.
        seconds: Wall time of each timed window, in repetition order.
        failed: "failed: <reason>" when the contestant could not run, else None.
    """

    contestant: contestants_lib.Contestant
    seconds: list[float] = dataclasses.field(default_factory=list)
    failed: str | None = None


class _BatchEndTimer(tf.keras.callbacks.Callback):
    """Stamps the end of every train and predict batch."""

    def __init__(self):
        super().__init__()
        self.stamps: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())

    def on_predict_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


class Workload:
    """A model built under a contestant's strategy, with one timed window per mode.

    Args:
        contestant: The strategy and device count.
        model_name: One of `contestants.MODEL_NAMES`.
        global_batch: Rows per step, split across the replicas.
    """

    def __init__(self, contestant, model_name: str, global_batch: int):
        self.contestant = contestant
        self.model_name = model_name
        self.global_batch = global_batch
        self.strategy = contestants_lib.make_strategy(contestant)
        with contestants_lib.scope(self.strategy):
            self.model = contestants_lib.build_model(model_name)
        features, labels = contestants_lib.synthetic_batch(model_name, global_batch)
        self._train_data = tf.data.Dataset.from_tensors((features, labels)).repeat()
        self._predict_data = tf.data.Dataset.from_tensors(features).repeat()
        self._loop_step = None
        self._loop_iterator = None

    def time_window(self, mode: str, steps: int) -> float:
        """Runs `steps` steady-state steps of `mode` and returns their wall time in seconds."""
        if mode == FIT:
            return self._time_keras(steps, self._fit)
        if mode == PREDICT:
            return self._time_keras(steps, self._predict)
        if mode == CUSTOM_LOOP:
            return self._time_custom_loop(steps)
        raise ValueError(f"Unknown mode {mode!r}; expected one of {list(MODES)}.")

    def _fit(self, steps: int, timer: _BatchEndTimer) -> None:
        self.model.fit(
            self._train_data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer]
        )

    def _predict(self, steps: int, timer: _BatchEndTimer) -> None:
        self.model.predict(self._predict_data, steps=steps, verbose=0, callbacks=[timer])

    def _time_keras(self, steps: int, run) -> float:
        timer = _BatchEndTimer()
        run(steps + 1, timer)
        return timer.stamps[-1] - timer.stamps[0]

    def _time_custom_loop(self, steps: int) -> float:
        if self._loop_step is None:
            self._build_custom_loop()
        self._loop_step(self._loop_iterator)  # Leaves no queued work before the clock starts.
        start = time.perf_counter()
        for _ in range(steps):
            losses = self._loop_step(self._loop_iterator)
        tf.nest.map_structure(lambda loss: loss.numpy(), losses)
        return time.perf_counter() - start

    def _build_custom_loop(self) -> None:
        strategy = self.strategy or tf.distribute.get_strategy()
        model, optimizer = self.model, self.model.optimizer
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        global_batch = self.global_batch

        def replica_step(features, labels):
            with tf.GradientTape() as tape:
                per_sample = loss_fn(labels, model(features, training=True))
                loss = tf.nn.compute_average_loss(per_sample, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return loss

        @tf.function
        def step(iterator):
            features, labels = next(iterator)
            return strategy.experimental_local_results(
                strategy.run(replica_step, args=(features, labels))
            )

        with contestants_lib.scope(self.strategy):
            self._loop_iterator = iter(strategy.experimental_distribute_dataset(self._train_data))
        self._loop_step = step
