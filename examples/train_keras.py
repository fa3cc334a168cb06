"""Trains a small classifier with Keras `fit` under the strategy `--strategy` names.

Run from the repository root (writes ./runs/train_keras; about a minute on 2 CPU cores):

    python examples/train_keras.py
    python examples/train_keras.py --strategy=mirrored --devices=4 --epochs=30
    python examples/train_keras.py --dataset=synthetic --num_samples=8192 --image_size=64

Kill it and run the same command again: it resumes from the newest committed checkpoint in
--model_dir (one trainer at a time per --model_dir). Across machines, start one process per
machine with its own TF_CONFIG and `--strategy=multi_worker`. It logs warnings and errors only;
--verbosity=0 adds INFO lines. Flags: --help; everything else: docs/trainers.md.
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
from absl import flags  # noqa: E402

from examples import checkpoints as checkpoints_lib  # noqa: E402
from examples import data as data_lib  # noqa: E402
from examples import optimizers, outputs, program, trainer_flags, trainer_run  # noqa: E402

flags.adopt_module_key_flags(trainer_flags)  # --help lists the shared flags as this trainer's own.

DEFAULT_MODEL_DIR = os.path.join("runs", "train_keras")


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
    verbose: str | int = "auto",
) -> outputs.TrainResult:
    """Trains with `model.fit`, checkpointing each epoch and resuming from the latest one.

    Args:
      strategy: one of `replica_strategy.strategies.STRATEGY_NAMES`.
      devices: replica device names (e.g. ["/cpu:0", "/cpu:1"]); None: every GPU, else the
        first two logical CPUs. Ignored by "multi_worker" and "default".
      dataset: "digits" or "synthetic" (see `data.load`).
      num_samples: training samples to use; None for the whole set.
      image_size: side of the synthetic images.
      hidden_units: width of the hidden layer.
      batch_size: the global batch size.
      epochs: total epochs, counting those restored from a checkpoint.
      learning_rate: Adam's learning rate.
      model_dir: checkpoints, TensorBoard logs and the final model; created if missing and
        locked for the run, before any data is loaded.
      seed: fixes the initial weights and every epoch's order.
      mirror_weights: with strategy="replica", `ReplicaStrategy(mirror_weights=True)`: a working
        copy of the weights on each replica device, master weights and Adam's state on the host.
      optimizer: "adam" (`keras.optimizers.Adam`) or "fused_adam" (`replica_strategy.FusedAdam`,
        the same Adam as one fused kernel per dense update: faster where the update runs on a
        CPU, as with strategy="replica"). Checkpoints of either resume with the other.
      split: with strategy="replica", `ReplicaStrategy(split=...)`: "even", "auto" (rows move
        toward the faster devices as each step measures them) or one positive weight per
        device. Recorded in `summary.json` with the fractions in force at the end.
        Everything `summary.json` records: docs/trainers.md.
      verbose: Keras' progress output.

    Returns:
      An `outputs.TrainResult`.

    Raises:
      model_dir.ModelDirError: `model_dir` is a file, not writable, or in use by another run.
      checkpoints.CorruptCheckpointError: a committed checkpoint's file is damaged.
      checkpoints.ModelMismatchError: the checkpoints in `model_dir` are of another model.
    """
    with trainer_run.start(
        "train_keras",
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
            model.compile(
                optimizer=optimizers.make_optimizer(optimizer, learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            # Built before the first step, so that a checkpoint restores Adam's slots too.
            model.optimizer.build(model.trainable_variables)
        checkpoints = checkpoints_lib.EpochCheckpoints(
            os.path.join(output_dir, "checkpoints"), model, model.optimizer
        )
        initial_epoch = outputs.resume(checkpoints, epochs)

        held_out = data_lib.held_out_batches(data.test_images, data.test_labels, batch_size)
        history = {}
        if initial_epoch < epochs:
            batches = data_lib.training_batches(
                data.train_images, data.train_labels, batch_size, seed, range(initial_epoch, epochs)
            )
            callbacks = [
                # First, so that each epoch's progress line ends before the checkpoint line.
                keras.callbacks.ProgbarLogger(),
                keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), write_graph=False),
                _CheckpointEachEpoch(checkpoints, epochs),
            ]
            with run.timed_training():
                history = model.fit(
                    batches,
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=data_lib.steps_per_epoch(len(data.train_labels), batch_size),
                    validation_data=held_out,
                    callbacks=callbacks,
                    shuffle=False,  # Each epoch comes in its own order already (epoch_order).
                    verbose=verbose,
                ).history
        accuracy = float(model.evaluate(held_out, return_dict=True, verbose=0)["accuracy"])
        return run.finish(model, accuracy, history, initial_epoch, epochs)


class _CheckpointEachEpoch(keras.callbacks.Callback):
    """Saves model + optimizer + epoch at the end of each epoch."""

    def __init__(self, checkpoints: checkpoints_lib.EpochCheckpoints, epochs: int):
        super().__init__()
        self._checkpoints = checkpoints
        self._epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        prefix = self._checkpoints.save(epoch + 1)
        print(f"Epoch {epoch + 1}/{self._epochs}: checkpoint saved to {prefix}", flush=True)


def main(argv):
    del argv  # Unused.
    trainer_run.main(train, DEFAULT_MODEL_DIR)


if __name__ == "__main__":
    program.run(main)
