"""What a run reads from and writes to `--model_dir`: where it resumes, what it leaves at the end.

    runs/train_keras/
      checkpoints/   one per epoch (checkpoints.py); a restart resumes from the newest
      logs/          TensorBoard: logs/train, logs/validation
      model.keras    the final model (optimizers.save_model: Keras alone loads it)
      summary.json   held-out accuracy, epochs, the epoch resumed from, the batch split

Under `MultiWorkerMirroredStrategy` each worker writes a directory of its own (`output_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from examples import checkpoints as checkpoints_lib
from examples import describe, optimizers


@dataclasses.dataclass
class TrainResult:
    """What a trainer's `train(...)` returns.

    Attributes:
      test_accuracy: accuracy on the held-out data after the last epoch.
      history: per-epoch metrics of the epochs this call trained, e.g. {"loss": [...]}.
      initial_epoch: epochs restored from a checkpoint (0 for a fresh start).
      model_path: the final model (`model.keras`) in `output_dir`.
      output_dir: where this process wrote (`model_dir`, or a worker's own directory).
      weights: the final weights, as numpy arrays in `model.get_weights()` order.
      split: what `summary.json` records of the batch split (`split_summary`).
    """

    test_accuracy: float
    history: dict
    initial_epoch: int
    model_path: str
    output_dir: str
    weights: list
    split: dict | None = None


def output_dir(distribution: tf.distribute.Strategy, model_dir: str) -> str:
    """Where this process writes: `model_dir`, or a multi-worker run's own one per worker.

    Under `MultiWorkerMirroredStrategy` only the chief (the "chief" task, else worker 0)
    writes to `model_dir`; every other worker writes to `model_dir/workertemp_<task id>`, as
    TensorFlow's multi-worker tutorials do. It is kept, so a restarted worker resumes from its
    own checkpoints.
    """
    resolver = getattr(distribution, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return model_dir
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "worker" and not resolver.task_id and not has_chief:
        return model_dir
    return os.path.join(model_dir, f"workertemp_{resolver.task_id or 0}")


def resume(checkpoints: checkpoints_lib.EpochCheckpoints, epochs: int) -> int:
    """Restores the newest committed checkpoint, says where the run starts; returns its epoch."""
    initial_epoch, prefix = checkpoints.restore_latest()
    if prefix is None:
        print(f"No checkpoint in {checkpoints.directory}; training from scratch.", flush=True)
    else:
        print(
            f"Resumed from checkpoint {prefix} after epoch {initial_epoch} of {epochs}.",
            flush=True,
        )
    return initial_epoch


def split_summary(distribution: tf.distribute.Strategy, split) -> dict:
    """What `summary.json` records of the batch split: `--split`, and the fractions at the end.

    The fractions are ReplicaStrategy's `strategy.split`; the other strategies split evenly and
    record None.
    """
    fractions = getattr(distribution, "split", None)
    return {
        "requested": split if isinstance(split, str) else list(split),
        "fractions": None if fractions is None else [float(value) for value in fractions],
    }


def finish(
    model,
    output_dir: str,
    accuracy: float,
    history: dict,
    initial_epoch: int,
    epochs: int,
    split: dict,
) -> TrainResult:
    """Saves `model.keras` and `summary.json`, prints where they are; returns the result.

    `split` is `split_summary(...)`; when the fractions moved during the run (`--split=auto`),
    the ones it ends with are printed too.
    """
    model_path = os.path.join(output_dir, "model.keras")
    optimizers.save_model(model, model_path)
    summary = {
        "test_accuracy": accuracy,
        "epochs": epochs,
        "initial_epoch": initial_epoch,
        "split": split,
    }
    summary_path = os.path.join(output_dir, "summary.json")
    with open(summary_path + ".tmp", "w") as file:
        json.dump(summary, file, indent=2, sort_keys=True)
    os.replace(summary_path + ".tmp", summary_path)  # Never a half-written summary.
    if split["requested"] == "auto" and split["fractions"] is not None:
        print(f"Batch split at the end: fractions {describe.fractions_text(split['fractions'])}.")
    print(f"Held-out accuracy: {accuracy:.4f}")
    print(
        f"Outputs in {os.path.abspath(output_dir)}:\n"
        f"  checkpoints: {os.path.join(output_dir, 'checkpoints')}\n"
        f"  TensorBoard: tensorboard --logdir {os.path.join(output_dir, 'logs')}\n"
        f"  final model: {model_path}\n"
        f"  summary:     {summary_path}",
        flush=True,
    )
    return TrainResult(
        test_accuracy=accuracy,
        history={name: [float(value) for value in values] for name, values in history.items()},
        initial_epoch=initial_epoch,
        model_path=model_path,
        output_dir=output_dir,
        weights=model.get_weights(),
        split=split,
    )
