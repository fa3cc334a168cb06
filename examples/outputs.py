"""What a run reads from and writes to `--model_dir`: where it resumes, what it leaves at the end.

    runs/train_keras/
      checkpoints/   one per epoch (checkpoints.py); a restart resumes from the newest
      logs/          TensorBoard: logs/train, logs/validation
      model.keras    the final model (optimizers.save_model: Keras alone loads it)
      summary.json   the record of the run (`run_record`; its fields: docs/trainers.md)

Under `MultiWorkerMirroredStrategy` each worker writes a directory of its own (`output_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from examples import checkpoints as checkpoints_lib
from examples import describe, optimizers
from replica_strategy.devices import short_name


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
      summary: everything `summary.json` records.
    """

    test_accuracy: float
    history: dict
    initial_epoch: int
    model_path: str
    output_dir: str
    weights: list
    split: dict | None = None
    summary: dict | None = None


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


def run_record(
    trainer: str, strategy_name: str, distribution: tf.distribute.Strategy, **settings
) -> dict:
    """The fields of `summary.json` known when a run starts: what runs, where, with what.

    `settings` are the trainer's arguments recorded as they are (`mirror_weights`, `dataset`,
    `batch_size`, `optimizer`, `learning_rate`, `seed`). docs/trainers.md lists every field.
    """
    lines = describe.describe_strategy(distribution).splitlines()
    placement = [line.removeprefix("Placement: ") for line in lines if line.startswith("Placement")]
    if tf.distribute.has_strategy() or distribution is not tf.distribute.get_strategy():
        devices = [short_name(name) for name in distribution.extended.worker_devices]
    else:
        devices = []  # The default strategy: the device TensorFlow picks, op by op.
    return {
        "trainer": trainer,
        "strategy": strategy_name,
        "strategy_class": type(distribution).__name__ if devices else None,
        "devices": devices,
        "num_replicas": distribution.num_replicas_in_sync,
        "placement": placement[0] if placement else "",
        **settings,
    }


def split_summary(distribution: tf.distribute.Strategy, requested) -> dict:
    """What `summary.json` records of the batch split: `--split`, and the fractions in force.

    Args:
      distribution: the run's strategy.
      requested: `--split` under ReplicaStrategy ("even", "auto" or weights); None under the
        other strategies, which split evenly whatever is asked.

    Returns:
      {"requested": ..., "fractions": one per replica}: ReplicaStrategy's `strategy.split`,
      else 1/N each.
    """
    fractions = getattr(distribution, "split", None)
    if fractions is None:
        fractions = [1 / distribution.num_replicas_in_sync] * distribution.num_replicas_in_sync
    if requested is not None and not isinstance(requested, str):
        requested = list(requested)  # Weights, a JSON array.
    return {"requested": requested, "fractions": [float(value) for value in fractions]}


def throughput(trained_rows: int, training_seconds: float | None) -> dict:
    """`training_seconds` and `examples_per_second` of `summary.json`; None when none trained."""
    if not trained_rows or not training_seconds:
        return {"training_seconds": None, "examples_per_second": None}
    return {
        "training_seconds": training_seconds,
        "examples_per_second": trained_rows / training_seconds,
    }


def finish(model, output_dir: str, summary: dict, history: dict) -> TrainResult:
    """Saves `model.keras` and `summary.json`, prints where they are; returns the result.

    `summary` is the record of the run (`run_record`, plus `test_accuracy`, `epochs`,
    `initial_epoch`, `split` and `throughput`). When the fractions moved during the run
    (`--split=auto`), the ones it ends with are printed too.
    """
    model_path = os.path.join(output_dir, "model.keras")
    optimizers.save_model(model, model_path)
    summary_path = os.path.join(output_dir, "summary.json")
    with open(summary_path + ".tmp", "w") as file:
        json.dump(summary, file, indent=2, sort_keys=True)
    os.replace(summary_path + ".tmp", summary_path)  # Never a half-written summary.
    split = summary["split"]
    if split["requested"] == "auto":
        print(f"Batch split at the end: fractions {describe.fractions_text(split['fractions'])}.")
    accuracy = summary["test_accuracy"]
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
        initial_epoch=summary["initial_epoch"],
        model_path=model_path,
        output_dir=output_dir,
        weights=model.get_weights(),
        split=split,
        summary=summary,
    )
