"""Trains the model of `train_keras.py` with a custom loop: `strategy.run`, `reduce`, datasets.

Run from the repository root (writes ./runs/train_custom_loop):

    python examples/train_custom_loop.py
    python examples/train_custom_loop.py --strategy=replica --devices=4 --batch_size=128

Each step divides the summed per-example loss by the number of rows in the whole global batch
(counted across replicas with `all_reduce`), so the summed gradients are the global batch's
mean gradient exactly, even when the last batch splits unevenly. A restart with the same flags
resumes from the newest committed checkpoint in --model_dir. Flags, outputs, resuming and
logging are those of train_keras.py: see --help and docs/trainers.md.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # Run as a script: make `examples` and the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
    # TensorFlow's C++ runtime logs from import on, before absl reads --verbosity: WARNING and
    # above unless TF_CPP_MIN_LOG_LEVEL says otherwise (0 shows its INFO lines).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from examples import checkpoints as checkpoints_lib  # noqa: E402
from examples import data as data_lib  # noqa: E402
from examples import optimizers, outputs, program, trainer_flags, trainer_run  # noqa: E402

flags.adopt_module_key_flags(trainer_flags)  # --help lists the shared flags as this trainer's own.

DEFAULT_MODEL_DIR = os.path.join("runs", "train_custom_loop")


def train(
    *,
    strategy: str = "replica",
    devices: list[str] | None = None,
    dataset: str = "digits",
    num_samples: int | None = None,
    image_size: int = 32,
    hidden_units: int = 64,
    batch_size: int = 64,
    epochs: int = 20,
    learning_rate: float = 0.005,
    model_dir: str = DEFAULT_MODEL_DIR,
    seed: int = 0,
    mirror_weights: bool = False,
    optimizer: str = "adam",
    split: str | tuple[float, ...] = "even",
    verbose: int = 1,
) -> outputs.TrainResult:
    """Trains with a custom loop, checkpointing each epoch and resuming from the latest one.

    Args: as `train_keras.train`; `verbose` is the `keras.utils.Progbar` verbosity.

    Returns:
      An `outputs.TrainResult`; `history` holds "loss" and "val_accuracy" per epoch.

    Raises: as `train_keras.train`.
    """
    with trainer_run.start(
        "train_custom_loop",
        strategy=strategy,
        devices=devices,
        dataset=dataset,
        num_samples=num_samples,
        image_size=image_size,
        batch_size=batch_size,
        learning_rate=learning_rate,
        model_dir=model_dir,
        seed=seed,
        mirror_weights=mirror_weights,
        optimizer=optimizer,
        split=split,
    ) as run:
        distribution, data, output_dir = run.distribution, run.data, run.output_dir
        with distribution.scope():
            model = data_lib.build_model(data.train_images.shape[1:], hidden_units, seed)
            adam = optimizers.make_optimizer(optimizer, learning_rate)
            # Built before the first step, so that a checkpoint restores its slots too.
            adam.build(model.trainable_variables)
        checkpoints = checkpoints_lib.EpochCheckpoints(
            os.path.join(output_dir, "checkpoints"), model, adam
        )
        initial_epoch = outputs.resume(checkpoints, epochs)

        train_step = _make_train_step(distribution, model, adam)
        held_out = distribution.experimental_distribute_dataset(
            data_lib.held_out_batches(data.test_images, data.test_labels, batch_size)
        )
        evaluate = _make_evaluate(distribution, model, held_out, len(data.test_labels))
        log = _EpochLog(os.path.join(output_dir, "logs"))
        steps = data_lib.steps_per_epoch(len(data.train_labels), batch_size)
        history = {"loss": [], "val_accuracy": []}
        with run.timed_training():
            for epoch in range(initial_epoch, epochs):
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
                batches = distribution.experimental_distribute_dataset(
                    data_lib.training_batches(
                        data.train_images,
                        data.train_labels,
                        batch_size,
                        seed,
                        range(epoch, epoch + 1),
                    )
                )
                progress = keras.utils.Progbar(steps, verbose=verbose)
                losses = []
                for step, batch in enumerate(batches):
                    losses.append(float(train_step(batch)))
                    progress.update(step + 1, [("loss", losses[-1])])
                values = {"loss": float(np.mean(losses)), "val_accuracy": evaluate()}
                log.write(epoch, values)
                for name, value in values.items():
                    history[name].append(value)
                prefix = checkpoints.save(epoch + 1)
                print(
                    f"Epoch {epoch + 1}/{epochs}: val_accuracy {values['val_accuracy']:.4f}, "
                    f"checkpoint saved to {prefix}",
                    flush=True,
                )
        return run.finish(model, evaluate(), history, initial_epoch, epochs)


class _EpochLog:
    """Per-epoch scalars for TensorBoard, laid out as Keras' `TensorBoard` callback lays them.

    `logs/train/epoch_<name>` and, for "val_<name>", `logs/validation/epoch_<name>`, at step
    `epoch` (0-based): runs of both trainers show side by side.
    """

    def __init__(self, log_dir: str):
        self._writers = {
            split: tf.summary.create_file_writer(os.path.join(log_dir, split))
            for split in ("train", "validation")
        }

    def write(self, epoch: int, values: dict) -> None:
        for name, value in values.items():
            split = "validation" if name.startswith("val_") else "train"
            with self._writers[split].as_default():
                tf.summary.scalar("epoch_" + name.removeprefix("val_"), value, step=epoch)
        for writer in self._writers.values():
            writer.flush()


def _make_train_step(distribution, model, optimizer):
    """One optimizer step on a distributed global batch; returns the global mean loss."""
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def replica_step(images, labels):
        rows = tf.cast(tf.shape(labels)[0], tf.float32)
        global_rows = tf.distribute.get_replica_context().all_reduce("sum", rows)
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_sum(loss_function(labels, logits)) / global_rows
        gradients = tape.gradient(loss, model.trainable_variables)
        # The optimizer sums the replicas' gradients, then applies them once.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(batch):
        per_replica_loss = distribution.run(replica_step, args=batch)
        return distribution.reduce("SUM", per_replica_loss, axis=None)

    return train_step


def _make_evaluate(distribution, model, held_out, num_rows: int):
    """A function returning the accuracy on `held_out` (a distributed dataset)."""

    def replica_correct(images, labels):
        predictions = tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(predictions == labels, tf.float32))

    @tf.function
    def batch_correct(batch):
        return distribution.reduce("SUM", distribution.run(replica_correct, args=batch), axis=None)

    def evaluate() -> float:
        return sum(float(batch_correct(batch)) for batch in held_out) / num_rows

    return evaluate


def main(argv):
    del argv  # Unused.
    trainer_run.main(train, DEFAULT_MODEL_DIR)


if __name__ == "__main__":
    program.run(main)
