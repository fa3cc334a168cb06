"""The flags every trainer shares, each checked by absl as it is parsed.

A bad value ends the program with a message naming the flag before TensorFlow does any work:
`DEFINE_enum` and bounds check single values, the validators below check the rest, and the
rules that involve two flags (`--mirror_weights` and `--split` are options of
`--strategy=replica`; `--strategy=one_device` takes one device) are multi-flag validators,
checked once here. Each trainer declares these
flags its own (`flags.adopt_module_key_flags(trainer_flags)`), so its `--help` lists them, and
turns them into the keyword arguments of its `train(...)` with `train_arguments(...)`.
"""

from __future__ import annotations

import math

from absl import flags

from examples import data as data_lib
from examples import optimizers
from replica_strategy import strategies

DATASETS = ("digits", "synthetic")
# --seed seeds NumPy (32-bit seeds) and, plus one, the second layer's initializer.
MAX_SEED = 2**31 - 2

_STRATEGY = flags.DEFINE_enum(
    "strategy",
    "replica",
    strategies.STRATEGY_NAMES,
    "Distribution strategy: 'replica' (ReplicaStrategy), 'mirrored', 'central_storage', "
    "'one_device', 'multi_worker' (TensorFlow's MultiWorkerMirroredStrategy, cluster from "
    "TF_CONFIG) or 'default' (no strategy).",
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
_DEVICES = flags.DEFINE_string(
    "devices",
    None,
    "Replica devices: a count ('4') or a comma-separated list of device names "
    "('/gpu:0,/gpu:1', '/cpu:0,/cpu:1') or GPU ids ('0,1'). With no GPU, a count splits the "
    "CPU into that many logical devices, and so do the names /cpu:0 to /cpu:<n-1> (as a run "
    "prints them); other names must be devices the machine has. Default: every GPU, else 2 logical CPUs. "
    "Ignored by --strategy=multi_worker and default.",
)
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
    f"Training samples to use (digits: at most {data_lib.DIGITS_TRAIN_SIZE}, default all; "
    f"synthetic: how many to generate, default {data_lib.SYNTHETIC_DEFAULT_SIZE}).",
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
    optimizers.OPTIMIZERS,
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


def train_arguments(default_model_dir: str) -> dict:
    """The flags as keyword arguments of a trainer's `train(...)` (absl has checked them).

    Args:
      default_model_dir: the `model_dir` when `--model_dir` is unset.

    Returns:
      A dict by flag name; "devices" is still None, a count or a list of names (see
      `local_devices.configure_devices`), "split" is "even", "auto" or a tuple of weights.
    """
    return {
        "strategy": _STRATEGY.value,
        "mirror_weights": _MIRROR_WEIGHTS.value,
        "split": parse_split(_SPLIT.value),
        "devices": parse_devices(_DEVICES.value),
        "dataset": _DATASET.value,
        "num_samples": _NUM_SAMPLES.value,
        "image_size": _IMAGE_SIZE.value,
        "hidden_units": _HIDDEN_UNITS.value,
        "batch_size": _BATCH_SIZE.value,
        "epochs": _EPOCHS.value,
        "learning_rate": _LEARNING_RATE.value,
        "optimizer": _OPTIMIZER.value,
        "seed": _SEED.value,
        "model_dir": _MODEL_DIR.value or default_model_dir,
    }


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
    try:
        weights = tuple(float(entry) for entry in text.split(","))
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


def format_split(split: str | tuple[float, ...]) -> str:
    """`--split` as typed: "even", "auto" or "3,1" (weights without a needless ".0")."""
    if isinstance(split, str):
        return split
    return ",".join(f"{weight:g}" for weight in split)


def replica_options(mirror_weights: bool = False, split: str | tuple = "even") -> dict:
    """The `ReplicaStrategy` options for `strategies.make_strategy` (those left unset omitted).

    Omitting them lets every other strategy take the same call.
    """
    options = {"mirror_weights": True} if mirror_weights else {}
    if split != "even":
        options["split"] = split
    return options


def _parsed_by(parse):
    """An absl validator that accepts what `parse` accepts and reports its ValueError."""

    def check(value) -> bool:
        try:
            parse(value)
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    return check


def _check_num_samples(values: dict) -> bool:
    if values["dataset"] == "digits" and (values["num_samples"] or 0) > data_lib.DIGITS_TRAIN_SIZE:
        raise flags.ValidationError(
            f"--dataset=digits has {data_lib.DIGITS_TRAIN_SIZE} training samples; ask for at "
            "most that many, or use --dataset=synthetic. "
            f"Received: --num_samples={values['num_samples']}"
        )
    return True


def _check_mirror_weights(values: dict) -> bool:
    if values["mirror_weights"] and values["strategy"] != "replica":
        raise flags.ValidationError(
            "--mirror_weights is an option of --strategy=replica only. "
            f"Received: --strategy={values['strategy']}"
        )
    return True


def _check_one_device(values: dict) -> bool:
    if values["strategy"] != "one_device":
        return True
    try:
        devices = parse_devices(values["devices"])
    except ValueError:
        return True  # The --devices validator reports it.
    count = len(devices) if isinstance(devices, list) else devices
    if count is not None and count > 1:
        raise flags.ValidationError(
            "--strategy=one_device runs one replica on one device: give one, e.g. --devices=1 "
            "or --devices=/gpu:0, or replicate with --strategy=replica or mirrored. "
            f"Received: --strategy=one_device --devices={values['devices']}"
        )
    return True


def _check_split_strategy(values: dict) -> bool:
    # Every strategy splits evenly, so --split=even goes with any of them.
    if values["strategy"] != "replica" and values["split"].strip() != "even":
        raise flags.ValidationError(
            "--split is an option of --strategy=replica only (the other strategies split every "
            f"batch evenly). Received: --strategy={values['strategy']} --split={values['split']}"
        )
    return True


flags.register_validator(
    _LEARNING_RATE,
    lambda value: 0 < value < math.inf,
    "--learning_rate must be a positive number, e.g. 0.001.",
)
flags.register_validator(_DEVICES, _parsed_by(parse_devices))
flags.register_validator(_SPLIT, _parsed_by(parse_split))
flags.register_multi_flags_validator([_DATASET, _NUM_SAMPLES], _check_num_samples)
flags.register_multi_flags_validator([_STRATEGY, _MIRROR_WEIGHTS], _check_mirror_weights)
flags.register_multi_flags_validator([_STRATEGY, _SPLIT], _check_split_strategy)
flags.register_multi_flags_validator([_STRATEGY, _DEVICES], _check_one_device)
