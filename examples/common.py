"""Flags shared by the example trainers, their validation, logging, devices and strategies.

Every flag is checked by absl as it is parsed (`DEFINE_enum`, bounds, validators), so a bad value
ends the program with a usage error naming the flag, before TensorFlow does any work. Each
trainer declares these flags its own (`flags.adopt_module_key_flags(common)`), so its `--help`
lists them. A trainer's `main(argv)` then calls `configure_logging()`, `arguments_from_flags()`,
`configure_devices()` (before TensorFlow initializes) and its importable `train(...)`; the
program runs it with `run(main)`, absl's `app.run` with help that exits 0 and usage errors
printed as their message alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging as standard_logging
import math
import os
import sys
import textwrap

import keras
import tensorflow as tf
from absl import app, flags, logging

import replica_strategy
from examples import data as data_lib
from examples import model_dir as model_dir_lib
from replica_strategy import devices as devices_lib
from replica_strategy import logical_devices, strategies

STRATEGIES = strategies.STRATEGY_NAMES
DATASETS = ("digits", "synthetic")
OPTIMIZERS = ("adam", "fused_adam")
# Strategies that replicate over the local devices named by --devices.
LOCAL_STRATEGIES = ("replica", "mirrored", "central_storage")
DEFAULT_CPU_COUNT = 2
DIGITS_TRAIN_SIZE = 1437  # scikit-learn's 1797 digits minus the 360 held out (see data.py).
# --seed seeds NumPy (32-bit seeds) and, plus one, the second layer's initializer.
MAX_SEED = 2**31 - 2

# Strategy construction. Options of `ReplicaStrategy` itself (--mirror_weights) belong here,
# and go to `strategies.make_strategy` as keyword arguments (`replica_options`).
_STRATEGY = flags.DEFINE_enum(
    "strategy",
    "replica",
    STRATEGIES,
    "Distribution strategy: 'replica' (ReplicaStrategy), 'mirrored', 'central_storage', "
    "'one_device', 'multi_worker' (TensorFlow's MultiWorkerMirroredStrategy, cluster from "
    "TF_CONFIG) or 'default' (no strategy).",
)
_DEVICES = flags.DEFINE_string(
    "devices",
    None,
    "Replica devices: a count ('4') or a comma-separated list of device names "
    "('/gpu:0,/gpu:1', '/cpu:0,/cpu:1') or GPU ids ('0,1'). With no GPU, a count splits the "
    "CPU into that many logical devices; names must be devices the machine has (without a "
    "GPU: /cpu:0 alone), they never split the CPU. Default: every GPU, else 2 logical CPUs. "
    "Ignored by --strategy=multi_worker and default.",
)
_MIRROR_WEIGHTS = flags.DEFINE_bool(
    "mirror_weights",
    False,
    "With --strategy=replica: a working copy of the weights on every replica device, the "
    "master weights and the optimizer state once on the host (ReplicaStrategy's "
    "mirror_weights=True, ZeRO-Offload's placement).",
)
_SPLIT = flags.DEFINE_string(
    "split",
    "even",
    "With --strategy=replica: how each batch is split across the replica devices. 'even' "
    "(the default): equal rows. 'auto': measured in every step, rows move toward the faster "
    "devices (for devices of different speeds). Or one positive weight per replica device, "
    "e.g. '3,1' for a device three times as fast as the other: each device gets that share "
    "of every batch (ReplicaStrategy's split argument).",
)

# Data and model.
_DATASET = flags.DEFINE_enum(
    "dataset",
    "digits",
    DATASETS,
    "Training data: 'digits' (scikit-learn's 8x8 handwritten digits, nothing downloaded) or "
    "'synthetic' (noisy RGB images around one random prototype per class: learnable, any size).",
)
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples",
    None,
    f"Training samples to use (digits: at most {DIGITS_TRAIN_SIZE}, default all; synthetic: "
    "how many to generate, default 2048).",
    lower_bound=1,
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size",
    32,
    "Side of the synthetic RGB images (at least 3: the legacy model's first layer is a 3x3 "
    "convolution).",
    lower_bound=3,
)
_HIDDEN_UNITS = flags.DEFINE_integer(
    "hidden_units", 64, "Width of the model's hidden layer.", lower_bound=1
)

# Training.
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 64, "Global batch size, split across all replicas.", lower_bound=1
)
_EPOCHS = flags.DEFINE_integer(
    "epochs", 20, "Total epochs, counting those restored from a checkpoint.", lower_bound=1
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 0.005, "Learning rate (Adam; RMSprop for the legacy trainer)."
)
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer",
    "adam",
    OPTIMIZERS,
    "Adam's implementation: 'adam' (keras.optimizers.Adam) or 'fused_adam' "
    "(replica_strategy.FusedAdam: the same Adam, each dense update one fused TensorFlow "
    "kernel). Choose fused_adam where the update runs on the host CPU every step, as with "
    "--strategy=replica (with or without --mirror_weights): about 3x faster there, the same "
    "numbers to float32 rounding, and the same checkpoint, so a run resumes with either. "
    "The legacy trainer trains with RMSprop and takes neither.",
)
_SEED = flags.DEFINE_integer(
    "seed",
    0,
    "Seed for the initial weights, every epoch's data order and the synthetic data.",
    lower_bound=0,
    upper_bound=MAX_SEED,
)
_MODEL_DIR = flags.DEFINE_string(
    "model_dir",
    None,
    "Where checkpoints, TensorBoard logs and the final model go (default ./runs/<trainer>). "
    "A restart with the same flags resumes from the newest checkpoint here. One trainer at a "
    "time: a second one on the same directory is refused.",
)


def _check_learning_rate(value: float) -> bool:
    return 0 < value < math.inf


def _check_devices(value: str | None) -> bool:
    try:
        parse_devices(value)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return True


def _check_num_samples(values: dict) -> bool:
    if values["dataset"] == "digits" and (values["num_samples"] or 0) > DIGITS_TRAIN_SIZE:
        raise flags.ValidationError(
            f"--dataset=digits has {DIGITS_TRAIN_SIZE} training samples; ask for at most that "
            f"many, or use --dataset=synthetic. Received: --num_samples={values['num_samples']}"
        )
    return True


flags.register_validator(
    _LEARNING_RATE,
    _check_learning_rate,
    "--learning_rate must be a positive number, e.g. 0.001.",
)
flags.register_validator(_DEVICES, _check_devices)


def _check_split(value: str) -> bool:
    try:
        parse_split(value)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return True


flags.register_validator(_SPLIT, _check_split)
flags.register_multi_flags_validator([_DATASET, _NUM_SAMPLES], _check_num_samples)


def _check_mirror_weights(values: dict) -> bool:
    if values["mirror_weights"] and values["strategy"] != "replica":
        raise flags.ValidationError(
            "--mirror_weights is an option of --strategy=replica only. "
            f"Received: --strategy={values['strategy']}"
        )
    return True


flags.register_multi_flags_validator([_STRATEGY, _MIRROR_WEIGHTS], _check_mirror_weights)


def _check_split_strategy(values: dict) -> bool:
    # Only ReplicaStrategy splits unevenly; every strategy splits evenly, so "even" is accepted.
    try:
        split = parse_split(values["split"])
    except ValueError:
        return True  # _check_split names the bad value.
    if split != "even" and values["strategy"] != "replica":
        raise flags.ValidationError(
            "--split is an option of --strategy=replica only (the other strategies split every "
            f"batch evenly). Received: --strategy={values['strategy']} --split={values['split']}"
        )
    return True


flags.register_multi_flags_validator([_STRATEGY, _SPLIT], _check_split_strategy)


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
    mirror_weights: bool = False
    optimizer: str = "adam"
    split: str | tuple[float, ...] = "even"


def arguments_from_flags(default_model_dir: str) -> Arguments:
    """The shared flags (absl validated them when it parsed them).

    Args:
      default_model_dir: the `--model_dir` to use when the flag is unset.

    Returns:
      The flag values; `devices` is still a count, a list of names, or None (see
      `configure_devices`).
    """
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
        mirror_weights=_MIRROR_WEIGHTS.value,
        optimizer=_OPTIMIZER.value,
        split=parse_split(_SPLIT.value),
    )


def configure_logging() -> None:
    """Python logging at WARNING unless `--verbosity` is given, each line printed once.

    `app.run` puts absl's handler on the root logger. TensorFlow gave its own `tensorflow`
    logger a stderr handler of its own when it was imported (no root handler existed yet), and
    its records also propagate to the root: each line came out twice, once from each handler.
    Removing TensorFlow's handler, as absl does for the root logger's, leaves absl's.
    """
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if logging.get_absl_handler() in standard_logging.getLogger().handlers:
        tf_logger = tf.get_logger()
        for handler in list(tf_logger.handlers):
            if isinstance(handler, standard_logging.StreamHandler) and handler.stream in (
                sys.stderr,
                sys.stdout,
            ):
                tf_logger.removeHandler(handler)


def parse_devices(value: str | None) -> int | list[str] | None:
    """Parses `--devices`: None, a count, GPU ids ("0,1") or device names ("/cpu:0,/cpu:1").

    Returns:
      None, a positive count, or a list of device names (GPU ids become "/gpu:<id>").

    Raises:
      ValueError: for an empty entry, a count below 1, or a mix of ids and names.
    """
    if value is None:
        return None
    entries = [entry.strip() for entry in value.split(",")]
    if not all(entries):
        raise ValueError(
            "--devices must be a count ('2') or a comma-separated list of device names or GPU "
            f"ids ('/cpu:0,/cpu:1', '0,1'), with no empty entry. Received: --devices={value}"
        )
    numeric = [entry.isdigit() for entry in entries]
    if len(entries) == 1 and numeric[0]:
        count = int(entries[0])
        if count < 1:
            raise ValueError(f"--devices count must be at least 1. Received: --devices={value}")
        return count
    if all(numeric):
        return [f"/gpu:{entry}" for entry in entries]
    if any(numeric) or not all(entry.startswith("/") for entry in entries):
        raise ValueError(
            "--devices must list either GPU ids ('0,1') or device names starting with '/' "
            f"('/gpu:0,/cpu:1'), not a mix. Received: --devices={value}"
        )
    return entries


def parse_split(value: str) -> str | tuple[float, ...]:
    """Parses `--split`: "even", "auto", or comma-separated weights ("3,1", "0.6, 0.4").

    Returns:
      "even", "auto", or a tuple of positive finite weights (ReplicaStrategy's `split`).

    Raises:
      ValueError: naming --split and the value, for anything else.
    """
    text = value.strip()
    if text in ("even", "auto"):
        return text
    entries = [entry.strip() for entry in text.split(",")]
    try:
        weights = tuple(float(entry) for entry in entries)
    except ValueError:
        raise ValueError(
            "--split must be 'even', 'auto' or comma-separated positive weights, one per "
            f"replica device (e.g. '3,1'). Received: --split={value}"
        ) from None
    if not all(math.isfinite(weight) and weight > 0 for weight in weights):
        raise ValueError(
            "--split weights must be positive finite numbers, one per replica device (e.g. "
            f"'3,1'). Received: --split={value}"
        )
    return weights


def check_split_devices(split: str | tuple[float, ...], devices: list[str]) -> None:
    """A usage error unless `split` is "even", "auto" or one weight per device of `devices`."""
    if isinstance(split, tuple) and len(split) != len(devices):
        raise app.UsageError(
            f"--split gives {len(split)} weights for {len(devices)} replica devices "
            f"({', '.join(devices)}); give one weight per device. Received: "
            f"--split={format_split(split)}"
        )


def format_split(split: str | tuple[float, ...]) -> str:
    """`--split` as typed: "even", "auto" or "3,1" (weights without a needless ".0")."""
    if isinstance(split, str):
        return split
    return ",".join(f"{weight:g}" for weight in split)


def configure_devices(devices: int | list[str] | None) -> list[str]:
    """Turns `--devices` into device names; with no GPU, a count splits the CPU.

    Only a count (or no `--devices`) splits the CPU into logical devices; names must be devices
    the machine has, so a typo such as `/cpu:5` is an error, not five more logical CPUs. Call
    this before anything initializes TensorFlow's runtime: logical CPUs can only be configured
    then. If the runtime is already initialized (as in tests), the devices that exist are used,
    and a request for more than exist is a usage error.

    Args:
      devices: None (every GPU, else `DEFAULT_CPU_COUNT` logical CPUs), a count, or names.

    Returns:
      The device names, one replica each.

    Raises:
      app.UsageError: when the process cannot have the devices asked for.
    """
    gpu_count = len(tf.config.list_physical_devices("GPU"))
    if isinstance(devices, list):
        _check_local_devices(devices, can_split_cpu=not gpu_count)
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
    return logical_devices.cpu_names(count)


def _check_local_devices(names: list[str], can_split_cpu: bool) -> None:
    """Every name is a distinct device of this process, or a usage error lists those there are.

    `can_split_cpu`: the machine has no GPU, so a count would give it logical CPUs; a missing
    device's message then offers that count.
    """
    available = [device.name for device in tf.config.list_logical_devices()]
    received = f"Received: --devices={','.join(names)}"
    if can_split_cpu:
        fix = (
            "Name devices from that list, or give a count, e.g. "
            f"--devices={len(names)}: only a count splits the CPU into logical devices."
        )
    else:
        fix = f"Name devices from that list, or give how many GPUs to use, e.g. --devices={len(names)}."
    seen = {}
    for name in names:
        spec = _device_spec(name, received)
        local = spec.job in (None, "localhost") and not spec.replica and not spec.task
        canonical = f"/device:{(spec.device_type or '').upper()}:{spec.device_index or 0}"
        if not local:
            raise app.UsageError(
                f"--devices names {name}, a device of another task: --strategy={_STRATEGY.value} "
                "uses this machine's devices (across machines, use --strategy=multi_worker). "
                f"Available: {', '.join(available)}. {received}"
            )
        if canonical not in available:
            raise app.UsageError(
                f"--devices names {name}, which this process does not have. Available: "
                f"{', '.join(available)}. {fix} {received}"
            )
        if canonical in seen:
            raise app.UsageError(
                f"--devices names {canonical} twice ({seen[canonical]} and {name}); each device "
                f"holds one replica. {received}"
            )
        seen[canonical] = name


def _device_spec(name: str, received: str) -> tf.DeviceSpec:
    try:
        return tf.DeviceSpec.from_string(name)
    except ValueError as error:
        raise app.UsageError(
            f"--devices entry {name} is not a device name ({error}). {received}"
        ) from None


def _split_cpu(count: int) -> None:
    """Gives the process at least `count` logical CPUs, or a usage error saying how many exist."""
    try:
        logical_devices.split_cpu(count)
    except RuntimeError:
        available = len(tf.config.list_logical_devices("CPU"))
        raise app.UsageError(
            f"--devices asks for {count} logical CPUs but TensorFlow already initialized with "
            f"{available}; ask for at most {available}, or configure devices before using TF."
        ) from None


def replica_options(mirror_weights: bool = False, split: str | tuple = "even") -> dict:
    """The `ReplicaStrategy` options to pass to `make_strategy` (those left unset omitted)."""
    options = {"mirror_weights": True} if mirror_weights else {}
    if split != "even":
        options["split"] = split
    return options


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Builds the Adam `--optimizer` names; call it inside the strategy's scope.

    Both hold the same slots under the same names: a checkpoint of one restores into the other.

    Args:
      name: one of `OPTIMIZERS`.
      learning_rate: Adam's learning rate.

    Returns:
      `keras.optimizers.Adam` or `replica_strategy.FusedAdam`.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "fused_adam":
        return replica_strategy.FusedAdam(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.")


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


@contextlib.contextmanager
def prepared_run(
    *,
    strategy: str,
    devices: list[str] | None,
    mirror_weights: bool,
    model_dir: str,
    dataset: str,
    num_samples: int | None,
    image_size: int,
    seed: int,
    split: str | tuple[float, ...] = "even",
):
    """What both trainers do before their model: strategy, output directory, seed, data.

    The strategy is the first TensorFlow object made (MultiWorkerMirroredStrategy must exist
    before other TF work). This process's output directory stays locked until the block ends.
    The first lines printed name the data, the strategy, its devices and where the weights live
    (`describe_strategy`); under ReplicaStrategy, the split of the batch it starts with follows.

    Yields:
      (the strategy, this process's output directory, the loaded `data_lib` data).
    """
    if is_local(strategy):
        devices = devices or default_devices()
    distribution = strategies.make_strategy(
        strategy, devices, **replica_options(mirror_weights, split)
    )
    directory, _ = output_dir(distribution, model_dir)
    with model_dir_lib.exclusive(directory):
        keras.utils.set_random_seed(seed)
        data = data_lib.load(dataset, num_samples, image_size, seed)
        print(data_lib.describe(dataset, data), flush=True)
        print(describe_strategy(distribution), flush=True)
        if strategy == "replica":
            print(describe_split(distribution, split), flush=True)
        yield distribution, directory, data


def describe_strategy(distribution: tf.distribute.Strategy) -> str:
    """Two lines in plain words: the strategy and its devices, then where the weights live.

    E.g. "Strategy: ReplicaStrategy, 2 replicas on /cpu:0, /cpu:1." and "Placement: the weights
    and the optimizer state once on /cpu:0 (the parameter device); ...". Devices are written as
    `--devices` takes them.
    """
    if distribution is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return (
            "Strategy: none (TensorFlow's default strategy), 1 replica on the device TensorFlow "
            "picks (the first GPU, else the CPU).\n"
            "Placement: the weights, the optimizer state and every step on that device."
        )
    extended = distribution.extended
    devices = [devices_lib.short_name(name) for name in extended.worker_devices]
    replicas = distribution.num_replicas_in_sync
    header = f"{replicas} replica{'s' if replicas > 1 else ''} on {', '.join(devices)}"
    if isinstance(distribution, replica_strategy.ReplicaStrategy):
        parameter_device = devices_lib.short_name(distribution.parameter_device)
        merge_device = devices_lib.short_name(distribution.merge_device)
        if distribution.mirror_weights:
            placement = (
                f"the master weights and the optimizer state once on {parameter_device} (the "
                "parameter device), a working copy of the trainable weights on each replica "
                "device (mirror_weights=True); gradients summed among the replica devices, "
                f"then sent once to {parameter_device}, where the optimizer steps."
            )
        else:
            summed = (
                "there" if merge_device == parameter_device else f"on {merge_device}"
            ) + " (the merge device)"
            placement = (
                f"the weights and the optimizer state once on {parameter_device} (the "
                f"parameter device), read by every replica (mirror_weights=False); gradients "
                f"summed {summed}, the optimizer steps on {parameter_device}."
            )
        return f"Strategy: ReplicaStrategy, {header}.\nPlacement: {placement}"
    if isinstance(distribution, tf.distribute.experimental.CentralStorageStrategy):
        parameter_device = devices_lib.short_name(extended.parameter_devices[0])
        return (
            f"Strategy: CentralStorageStrategy, {header}.\n"
            f"Placement: the weights and the optimizer state once on {parameter_device} (the "
            "parameter device), read by every replica; gradients summed and the optimizer "
            "steps there."
        )
    if isinstance(distribution, tf.distribute.OneDeviceStrategy):
        return (
            f"Strategy: OneDeviceStrategy, {header}.\n"
            f"Placement: the weights, the optimizer state and every step on {devices[0]}."
        )
    if isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = distribution.cluster_resolver
        jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
        workers = max(1, len(jobs.get("chief", [])) + len(jobs.get("worker", [])))
        return (
            f"Strategy: MultiWorkerMirroredStrategy, {replicas} replica"
            f"{'s' if replicas > 1 else ''} across {workers} worker{'s' if workers > 1 else ''}"
            f", this worker's on {', '.join(devices)}.\n"
            "Placement: a copy of the weights and of the optimizer state on every replica "
            "device of every worker; gradients summed across all of them, each copy steps."
        )
    if isinstance(distribution, tf.distribute.MirroredStrategy):
        return (
            f"Strategy: MirroredStrategy, {header}.\n"
            "Placement: a copy of the weights and of the optimizer state on each replica "
            "device; gradients summed among them, each copy steps."
        )
    return f"Strategy: {type(distribution).__name__}, {header}."


def _fractions_text(fractions) -> str:
    return " / ".join(f"{fraction:.3f}" for fraction in fractions)


def describe_split(distribution, split: str | tuple[float, ...]) -> str:
    """One line: the `--split` asked for, the fractions in force and the devices they go to."""
    devices = ", ".join(
        devices_lib.short_name(name) for name in distribution.extended.worker_devices
    )
    line = (
        f"Batch split: --split={format_split(split)}, fractions {_fractions_text(distribution.split)} "
        f"of each batch on {devices}"
    )
    if split == "auto":
        line += " (measured every step; rows move toward the faster devices)"
    return line + "."


def split_summary(distribution, split: str | tuple[float, ...]) -> dict:
    """What `summary.json` records of the split: the flag, and the fractions in force at the end
    (ReplicaStrategy's `strategy.split`; other strategies split evenly and report none)."""
    fractions = getattr(distribution, "split", None)
    return {
        "requested": split if isinstance(split, str) else list(split),
        "fractions": None if fractions is None else [float(value) for value in fractions],
    }


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
      split: what `summary.json` records of the split (`split_summary`), or None.
    """

    test_accuracy: float
    history: dict
    initial_epoch: int
    model_path: str
    output_dir: str
    weights: list
    split: dict | None = None


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


def resume(checkpoints, epochs: int) -> int:
    """Restores the newest committed checkpoint of `checkpoints`, says so; returns its epoch."""
    initial_epoch, prefix = checkpoints.restore_latest()
    if prefix is None:
        print(f"No checkpoint in {checkpoints.directory}; training from scratch.", flush=True)
    else:
        print(
            f"Resumed from checkpoint {prefix} after epoch {initial_epoch} of {epochs}.",
            flush=True,
        )
    return initial_epoch


def save_model(model, path: str) -> None:
    """Saves `model` to `path` (a `.keras` file) so that Keras alone loads it; call it last.

    A `.keras` file names each class from outside Keras that it holds, and only a process that
    has imported that class loads it with its optimizer (docs/keras.md). A compiled-in
    `replica_strategy.FusedAdam` is therefore first replaced by the `keras.optimizers.Adam` it
    equals: the same config, and its state copied over (the same variables in the same order);
    the model is compiled again with that Adam and its own loss and metrics.
    """
    fused = getattr(model, "optimizer", None)
    if isinstance(fused, replica_strategy.FusedAdam):
        with model.distribute_strategy.scope():
            arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
            adam = keras.optimizers.Adam.from_config(fused.get_config())
            model.compile(**(arguments | {"optimizer": adam}))
            adam.build(model.trainable_variables)
            for adam_variable, fused_variable in zip(adam.variables, fused.variables, strict=True):
                adam_variable.assign(fused_variable)
    model.save(path)


def finish(
    model, output_dir, accuracy, history, initial_epoch, epochs, split: dict | None = None
) -> TrainResult:
    """Saves the final model and `summary.json`, prints where they are; returns the result.

    `split` is `split_summary(...)`: written to `summary.json` and, when the fractions moved
    during the run (`--split=auto`), printed.
    """
    model_path = os.path.join(output_dir, "model.keras")
    save_model(model, model_path)
    history = {name: [float(value) for value in values] for name, values in history.items()}
    summary = {"test_accuracy": accuracy, "epochs": epochs, "initial_epoch": initial_epoch}
    if split is not None:
        summary["split"] = split
        if split["requested"] == "auto" and split["fractions"] is not None:
            print(
                f"Batch split at the end: fractions {_fractions_text(split['fractions'])}.",
                flush=True,
            )
    write_summary(output_dir, summary)
    print(f"Held-out accuracy: {accuracy:.4f}", flush=True)
    announce_outputs(output_dir, model_path)
    return TrainResult(
        test_accuracy=accuracy,
        history=history,
        initial_epoch=initial_epoch,
        model_path=model_path,
        output_dir=output_dir,
        weights=model.get_weights(),
        split=split,
    )


def run(main) -> None:
    """Runs a trainer's `main` as `app.run(main)` does, with two differences for its user.

    `--help` (and `--helpshort`, `--helpfull`) exits 0: asking for help is not a failure (absl
    exits 1). An `app.UsageError` from `main` ends the program with its message alone, as
    `UsageError: <message>` on stderr and the error's exit status (1), where `app.run` first
    prints the module's docstring and every flag. Its message names the flag, the value
    received and the fix already. `main` itself still raises the error, for callers and tests.
    """

    def main_with_short_usage_errors(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            print(f"UsageError: {error}", file=sys.stderr, flush=True)
            raise SystemExit(error.exitcode) from None

    app.run(main_with_short_usage_errors, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run`'s flags parser: absl's (`app.parse_flags_with_usage`), with help exiting 0.

    absl's help flags print the help on stdout and then end the program, while the command
    line is being parsed, with status 1; that status becomes 0. A bad flag value still ends it
    with status 1 and absl's report: `FATAL Flags parsing error: <message>`.

    Returns:
      The arguments left after the flags, program name first, for `main`.
    """
    try:
        return flags.FLAGS(argv)
    except SystemExit as help_exit:
        # Only the help flags exit from inside the parse (after printing the help).
        raise SystemExit(0 if help_exit.code == 1 else help_exit.code) from None
    except flags.Error as error:
        # absl's own report of a bad flag (app.parse_flags_with_usage), exit status 1.
        message = str(error)
        if "\n" in message:
            sys.stderr.write(f"FATAL Flags parsing error:\n{textwrap.indent(message, '  ')}\n")
        else:
            sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        raise SystemExit(1) from None


@contextlib.contextmanager
def exit_with_message(*error_types):
    """Ends the program with the message of an error of `error_types` alone, exit status 1.

    For errors whose message names the problem and its fix (a damaged checkpoint, a model that
    does not match `--model_dir`): a traceback would bury it.
    """
    try:
        yield
    except error_types as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from error
