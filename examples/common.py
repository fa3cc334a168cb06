"""Flags shared by the example trainers, their validation, devices and the strategy factory.

Every trainer's `main(argv)` calls `arguments_from_flags()` (bad values end with
`app.UsageError` naming the flag), then `configure_devices()` before TensorFlow initializes, then
its importable `train(...)`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
from absl import app, flags
from tensorflow.core.framework import summary_pb2

import replica_strategy

STRATEGIES = ("replica", "mirrored", "central_storage", "one_device", "multi_worker", "default")
DATASETS = ("digits", "synthetic")
# Strategies that replicate over the local devices named by --devices.
LOCAL_STRATEGIES = ("replica", "mirrored", "central_storage")
DEFAULT_CPU_COUNT = 2

_STRATEGY = flags.DEFINE_string(
    "strategy",
    "replica",
    f"Distribution strategy, one of {', '.join(STRATEGIES)}. 'multi_worker' reads the cluster "
    "from TF_CONFIG; 'default' uses no strategy.",
)
_DEVICES = flags.DEFINE_string(
    "devices",
    None,
    "Replica devices: a count ('4') or a comma-separated list of device names "
    "('/gpu:0,/gpu:1', '/cpu:0,/cpu:1') or GPU ids ('0,1'). With no GPU, a count splits the "
    "CPU into that many logical devices. Default: every GPU, else 2 logical CPUs.",
)
_DATASET = flags.DEFINE_string("dataset", "digits", f"Training data, one of {', '.join(DATASETS)}.")
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples",
    None,
    "Training samples to use (digits: at most 1437; synthetic: how many to generate, "
    "default 2048).",
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Side of the synthetic RGB images.")
_HIDDEN_UNITS = flags.DEFINE_integer("hidden_units", 64, "Width of the model's hidden layer.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size (all replicas).")
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Number of epochs to train for.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.005, "Adam learning rate.")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir",
    None,
    "Where checkpoints, TensorBoard logs and the final model go (default ./runs/<trainer>). "
    "A restart with the same flags resumes from the latest checkpoint here.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for weights, data order and synthetic data.")


@dataclasses.dataclass(frozen=True)
class Arguments:
    """The validated flags, as the keyword arguments of a trainer's `train(...)`."""

    strategy: str
    devices: int | list[str] | None
    dataset: str
    num_samples: int | None
    image_size: int
    hidden_units: int
    batch_size: int
    epochs: int
    learning_rate: float
    model_dir: str
    seed: int


def arguments_from_flags(default_model_dir: str) -> Arguments:
    """Reads and validates the shared flags.

    Args:
      default_model_dir: the `--model_dir` to use when the flag is unset.

    Returns:
      The flag values; `devices` is still a count, a list of names, or None (see
      `configure_devices`).

    Raises:
      app.UsageError: naming the flag, for any value out of range.
    """
    _check_choice("strategy", _STRATEGY.value, STRATEGIES)
    _check_choice("dataset", _DATASET.value, DATASETS)
    for holder in (_BATCH_SIZE, _EPOCHS, _HIDDEN_UNITS, _IMAGE_SIZE):
        _check_positive(holder.name, holder.value)
    if _NUM_SAMPLES.value is not None:
        _check_positive(_NUM_SAMPLES.name, _NUM_SAMPLES.value)
    _check_positive(_LEARNING_RATE.name, _LEARNING_RATE.value)
    return Arguments(
        strategy=_STRATEGY.value,
        devices=parse_devices(_DEVICES.value),
        dataset=_DATASET.value,
        num_samples=_NUM_SAMPLES.value,
        image_size=_IMAGE_SIZE.value,
        hidden_units=_HIDDEN_UNITS.value,
        batch_size=_BATCH_SIZE.value,
        epochs=_EPOCHS.value,
        learning_rate=_LEARNING_RATE.value,
        model_dir=_MODEL_DIR.value or default_model_dir,
        seed=_SEED.value,
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise app.UsageError(
            f"--{name} must be one of {', '.join(choices)}. Received: --{name}={value}"
        )


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise app.UsageError(f"--{name} must be positive. Received: --{name}={value}")


def parse_devices(value: str | None) -> int | list[str] | None:
    """Parses `--devices`: None, a count, GPU ids ("0,1") or device names ("/cpu:0,/cpu:1").

    Returns:
      None, a positive count, or a list of device names (GPU ids become "/gpu:<id>").

    Raises:
      app.UsageError: for an empty entry, a count below 1, or a mix of ids and names.
    """
    if value is None:
        return None
    entries = [entry.strip() for entry in value.split(",")]
    if not all(entries):
        raise app.UsageError(
            "--devices must be a count ('2') or a comma-separated list of device names or GPU "
            f"ids ('/cpu:0,/cpu:1', '0,1'), with no empty entry. Received: --devices={value}"
        )
    numeric = [entry.isdigit() for entry in entries]
    if len(entries) == 1 and numeric[0]:
        count = int(entries[0])
        if count < 1:
            raise app.UsageError(f"--devices count must be at least 1. Received: --devices={value}")
        return count
    if all(numeric):
        return [f"/gpu:{entry}" for entry in entries]
    if any(numeric) or not all(entry.startswith("/") for entry in entries):
        raise app.UsageError(
            "--devices must list either GPU ids ('0,1') or device names starting with '/' "
            f"('/gpu:0,/cpu:1'), not a mix. Received: --devices={value}"
        )
    return entries


def configure_devices(devices: int | list[str] | None) -> list[str]:
    """Turns `--devices` into device names, splitting the CPU when there is no GPU.

    Call this before anything initializes TensorFlow's runtime: logical CPUs can only be
    configured then. If the runtime is already initialized (as in tests), the devices that
    exist are used, and a request for more than exist is a usage error.

    Args:
      devices: None (every GPU, else `DEFAULT_CPU_COUNT` logical CPUs), a count, or names.

    Returns:
      The device names, one replica each.

    Raises:
      app.UsageError: when the process cannot have the devices asked for.
    """
    gpu_count = len(tf.config.list_physical_devices("GPU"))
    if isinstance(devices, list):
        cpu_indices = [_cpu_index(name) for name in devices]
        if not gpu_count and all(index is not None for index in cpu_indices):
            _split_cpu(max(cpu_indices) + 1)
        return devices
    if gpu_count:
        count = gpu_count if devices is None else devices
        if count > gpu_count:
            raise app.UsageError(
                f"--devices={count} asks for more GPUs than the {gpu_count} this machine has."
            )
        return [f"/gpu:{index}" for index in range(count)]
    count = DEFAULT_CPU_COUNT if devices is None else devices
    _split_cpu(count)
    return [f"/cpu:{index}" for index in range(count)]


def _cpu_index(name: str) -> int | None:
    spec = tf.DeviceSpec.from_string(name)
    if (spec.device_type or "").upper() != "CPU":
        return None
    return spec.device_index or 0


def _split_cpu(count: int) -> None:
    """Gives the process at least `count` logical CPUs, if the runtime is not yet initialized."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        pass  # Already initialized: use the logical CPUs that exist, if there are enough.
    available = len(tf.config.list_logical_devices("CPU"))
    if available < count:
        raise app.UsageError(
            f"--devices asks for {count} logical CPUs but TensorFlow already initialized with "
            f"{available}; ask for at most {available}, or configure devices before using TF."
        )


def make_strategy(name: str, devices: list[str] | None):
    """Builds the strategy `--strategy` names.

    Args:
      name: one of `STRATEGIES`.
      devices: device names for the local strategies (`one_device` uses the first);
        `multi_worker` and `default` ignore them.

    Returns:
      A `tf.distribute.Strategy`.
    """
    if name == "replica":
        return replica_strategy.ReplicaStrategy(devices)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "central_storage":
        return tf.distribute.experimental.CentralStorageStrategy(compute_devices=devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0] if devices else "/cpu:0")
    if name == "multi_worker":
        return KerasMultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")


class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """TensorFlow's `MultiWorkerMirroredStrategy`, with `reduce` as Keras 3's `fit` calls it.

    Across two or more workers, Keras 3's `fit` calls `reduce` on a tuple (its build-time
    reduce of the first batch) and with `axis=0` on scalar losses and metrics; TF's
    multi-worker `reduce` takes neither (keras-team/keras#20585). This walks nested structures
    and reduces a scalar with `axis=None`. Everything else is TensorFlow's own engine.
    """

    def reduce(self, reduce_op, value, axis=None):
        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return super(KerasMultiWorkerMirroredStrategy, self).reduce(
                reduce_op, leaf, None if rank == 0 else axis
            )

        return tf.nest.map_structure(reduce_leaf, value)


def default_devices() -> list[str]:
    """Every logical GPU, else the first `DEFAULT_CPU_COUNT` logical CPUs that exist."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [device.name for device in gpus]
    cpus = tf.config.list_logical_devices("CPU")[:DEFAULT_CPU_COUNT]
    return [device.name for device in cpus]


def output_dir(strategy, model_dir: str) -> tuple[str, bool]:
    """Where this process writes, and whether it is the chief.

    Under `MultiWorkerMirroredStrategy` only the chief writes to `model_dir`; every other
    worker writes to `model_dir/workertemp_<task id>` (kept, so a restarted worker resumes
    from its own checkpoints), as TensorFlow's multi-worker tutorials do.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None) or 0
    has_chief = resolver is not None and "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and not has_chief
    )
    if is_chief:
        return model_dir, True
    return os.path.join(model_dir, f"workertemp_{task_id}"), False


def write_summary(directory: str, summary: dict) -> str:
    """Writes `summary.json` (accuracy, epochs, paths) atomically; returns its path."""
    path = os.path.join(directory, "summary.json")
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(summary, file, indent=2, sort_keys=True)
    os.replace(temporary, path)
    return path


@dataclasses.dataclass
class TrainResult:
    """What a trainer's `train(...)` returns.

    Attributes:
      test_accuracy: accuracy on the held-out data after the last epoch.
      history: per-epoch metrics of the epochs this call trained, e.g. {"loss": [...]}.
      initial_epoch: epochs restored from a checkpoint (0 for a fresh start).
      model_path: the final model (`model.keras`) in `output_dir`.
      output_dir: where this process wrote (`model_dir`, or a worker's temp dir).
      weights: the final weights, as numpy arrays in `model.get_weights()` order.
    """

    test_accuracy: float
    history: dict
    initial_epoch: int
    model_path: str
    output_dir: str
    weights: list


def is_local(strategy: str) -> bool:
    """Whether `strategy` runs on this machine's devices named by --devices."""
    return strategy in LOCAL_STRATEGIES or strategy == "one_device"


def announce_outputs(directory: str, model_path: str) -> None:
    """Prints where a run wrote its outputs."""
    logs = os.path.join(directory, "logs")
    print(
        f"Outputs in {os.path.abspath(directory)}:\n"
        f"  checkpoints: {os.path.join(directory, 'checkpoints')}\n"
        f"  TensorBoard: tensorboard --logdir {logs}\n"
        f"  final model: {model_path}\n"
        f"  summary:     {os.path.join(directory, 'summary.json')}",
        flush=True,
    )


class ScalarLog:
    """Writes per-epoch scalars as TensorBoard event files, under `log_dir/<split>`.

    It uses TensorFlow's own `tf.summary.write` with the scalar plugin's metadata, so runs log
    without the `tensorboard` package installed; `pip install tensorboard` only to view them.
    Keys starting with "val_" go to `log_dir/validation`, the others to `log_dir/train`.
    """

    def __init__(self, log_dir: str):
        self._writers = {
            split: tf.summary.create_file_writer(os.path.join(log_dir, split))
            for split in ("train", "validation")
        }
        self._metadata = summary_pb2.SummaryMetadata()
        self._metadata.plugin_data.plugin_name = "scalars"
        self._metadata.data_class = summary_pb2.DATA_CLASS_SCALAR

    def write(self, epoch: int, values: dict) -> None:
        """Logs `values` ({"loss": 0.3, "val_accuracy": 0.9, ...}) at step `epoch`."""
        for name, value in values.items():
            split = "validation" if name.startswith("val_") else "train"
            tag = "epoch_" + name.removeprefix("val_")
            with self._writers[split].as_default():
                tf.summary.write(
                    tag, tf.constant(float(value)), step=epoch, metadata=self._metadata
                )
        for writer in self._writers.values():
            writer.flush()
