"""Turns `--devices` into the device names a strategy replicates over, on this machine.

A count (or no `--devices`) means that many GPUs, or, on a machine without any, that many
logical CPUs split off the host CPU (`replica_strategy.logical_devices`); so do the names a run
prints for them, `/cpu:0,...,/cpu:<n-1>` (in any spelling, e.g. `/device:CPU:1`). Other names
must be devices this process has: a typo such as `/cpu:5` is an error listing the devices there
are, never five more logical CPUs. Whatever cannot be had is an `app.UsageError` naming `--devices`.
"""

from __future__ import annotations

import tensorflow as tf
from absl import app

from examples import trainer_flags
from replica_strategy import logical_devices

# The strategies that replicate over the devices named by --devices; the others ignore it.
LOCAL_STRATEGIES = ("replica", "mirrored", "central_storage", "one_device")
DEFAULT_CPU_COUNT = 2


def configure_devices(
    devices: int | list[str] | None, split: str | tuple[float, ...] = "even"
) -> list[str]:
    """The device names for `--devices`; with no GPU, a count splits the CPU.

    Call it before anything initializes TensorFlow's runtime: logical CPUs can only be
    configured then. Once the runtime is initialized (as in tests), the logical CPUs that exist
    are used, and asking for more is a usage error.

    Args:
      devices: None (every GPU, else `DEFAULT_CPU_COUNT` logical CPUs), a count, or names.
      split: `--split`; weights must be one per device.

    Returns:
      The device names, one replica each.

    Raises:
      app.UsageError: when the process cannot have the devices asked for.
    """
    names = _device_names(devices)
    if isinstance(split, tuple) and len(split) != len(names):
        raise app.UsageError(
            f"--split gives {len(split)} weights for {len(names)} replica devices "
            f"({', '.join(names)}); give one weight per device. Received: "
            f"--split={trainer_flags.format_split(split)}"
        )
    return names


def _device_names(devices: int | list[str] | None) -> list[str]:
    gpu_count = len(tf.config.list_physical_devices("GPU"))
    if isinstance(devices, list):
        if not gpu_count and _cpu_count_named(devices):
            # The names a run prints, /cpu:0, /cpu:1, ...: the CPU split as --devices=<count>.
            _split_cpu(_cpu_count_named(devices))
        _check_names(devices, can_split_cpu=not gpu_count)
        return devices
    if gpu_count:
        count = gpu_count if devices is None else devices
        if count > gpu_count:
            raise app.UsageError(
                f"--devices={count} asks for more GPUs than the {gpu_count} this machine has."
            )
        return [f"/gpu:{index}" for index in range(count)]
    return _split_cpu(DEFAULT_CPU_COUNT if devices is None else devices)


def _cpu_count_named(names: list[str]) -> int:
    """n when `names` are /cpu:0 ... /cpu:<n-1> in any order and any spelling, else 0.

    Only such a set stands for a split CPU: a lone /cpu:5 is a typo, not six logical CPUs.
    """
    indices = []
    for name in names:
        try:
            spec = tf.DeviceSpec.from_string(name)
        except ValueError:
            return 0  # _check_names reports it.
        if (spec.device_type or "").upper() != "CPU" or spec.job not in (None, "localhost"):
            return 0
        indices.append(spec.device_index or 0)
    return len(names) if sorted(indices) == list(range(len(names))) else 0


def _split_cpu(count: int) -> list[str]:
    try:
        return logical_devices.split_cpu(count)
    except RuntimeError:
        available = len(tf.config.list_logical_devices("CPU"))
        raise app.UsageError(
            f"--devices asks for {count} logical CPUs but TensorFlow already initialized with "
            f"{available}; ask for at most {available}, or configure devices before using TF."
        ) from None


def default_devices() -> list[str]:
    """Every logical GPU, else the first `DEFAULT_CPU_COUNT` logical CPUs that exist.

    For a `train(...)` called without devices: it never reconfigures a running TensorFlow.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [device.name for device in gpus]
    return [device.name for device in tf.config.list_logical_devices("CPU")[:DEFAULT_CPU_COUNT]]


def _check_names(names: list[str], can_split_cpu: bool) -> None:
    """Every name is a distinct device of this process, or a usage error lists those there are.

    `can_split_cpu`: the machine has no GPU, so a count would give it logical CPUs; the message
    about a missing device then offers that count.
    """
    available = [device.name for device in tf.config.list_logical_devices()]
    received = f"Received: --devices={','.join(names)}"
    if can_split_cpu:
        count = max(len(names), 2)
        fix = (
            f"Name devices from that list, or split the CPU into logical devices: give a count, "
            f"e.g. --devices={count}, or name them all, "
            f"--devices={','.join(logical_devices.cpu_names(count))}."
        )
    else:
        fix = f"Name devices from that list, or give how many GPUs to use, e.g. --devices={len(names)}."
    seen = {}
    for name in names:
        try:
            spec = tf.DeviceSpec.from_string(name)
        except ValueError as error:
            raise app.UsageError(
                f"--devices entry {name} is not a device name ({error}). {received}"
            ) from None
        canonical = f"/device:{(spec.device_type or '').upper()}:{spec.device_index or 0}"
        if spec.job not in (None, "localhost") or spec.replica or spec.task:
            raise app.UsageError(
                f"--devices names {name}, a device of another task: the trainers replicate over "
                "this machine's devices (across machines, use --strategy=multi_worker). "
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
