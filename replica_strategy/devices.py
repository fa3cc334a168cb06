"""Turns the `devices` / `gpus` arguments into validated, canonical device names.

Everything here runs before any replica exists: it only asks TensorFlow which logical devices
the process has (`tf.config.list_logical_devices`), never which physical ones, so the same code
works on GPUs and on the logical CPUs the tests split the host into.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from absl import logging

DeviceSpec = int | str

_FALLBACK_DEVICE = "/device:CPU:0"
# (job, replica, task) of this process's devices, as written in full or left out.
_LOCAL_PROCESS = {
    (job, replica, task)
    for job in (None, "localhost")
    for replica in (None, 0)
    for task in (None, 0)
}


def canonical_name(device: str, argument: str = "device", received: object = None) -> str:
    """The canonical name of a device of this process, e.g. "/cpu:1" -> "/device:CPU:1".

    Args:
      device: a device name.
      argument: the caller's argument that held it, named in errors.
      received: that argument's value as passed (default: `device`), echoed in errors.

    Raises:
      ValueError: for a name TensorFlow cannot parse, one without a device type, or one on
        another job, replica or task: this strategy runs on one machine.
    """
    received = device if received is None else received
    try:
        spec = tf.DeviceSpec.from_string(device)
    except ValueError as error:
        raise ValueError(
            f"`{argument}` holds {device!r}, which is not a device name ({error}). Name "
            f"devices such as '/gpu:0' or '/cpu:1'. Received: {argument}={received!r}"
        ) from error
    if spec.device_type is None:
        raise ValueError(
            f"`{argument}` holds {device!r}, which names no device type and index. Name "
            f"devices such as '/gpu:0' or '/cpu:1'. Received: {argument}={received!r}"
        )
    if (spec.job, spec.replica, spec.task) not in _LOCAL_PROCESS:
        raise ValueError(
            f"`{argument}` holds {device!r}, a device of another process (job {spec.job!r}, "
            f"replica {spec.replica}, task {spec.task}); ReplicaStrategy runs on this machine "
            "only. Name its devices without a job, e.g. '/gpu:0', or as "
            "'/job:localhost/replica:0/task:0/gpu:0'; to train on several machines, use "
            f"tf.distribute.MultiWorkerMirroredStrategy. Received: {argument}={received!r}"
        )
    index = 0 if spec.device_index is None else spec.device_index
    return f"/device:{spec.device_type.upper()}:{index}"


def short_name(device: str) -> str:
    """The short form of a device name, for display: "/job:localhost/.../device:GPU:1" -> "/gpu:1".

    Unlike `canonical_name`, it accepts a device of any process and does not validate: it names
    devices found in graphs and logs (a send's `recv_device`, say).
    """
    spec = tf.DeviceSpec.from_string(device)
    return f"/{(spec.device_type or 'cpu').lower()}:{spec.device_index or 0}"


def available_devices() -> list[str]:
    """Canonical names of every logical device this process can place ops on."""
    return [canonical_name(d.name) for d in tf.config.list_logical_devices()]


def available_gpus() -> list[str]:
    return [canonical_name(d.name) for d in tf.config.list_logical_devices("GPU")]


def resolve_devices(devices: Sequence[DeviceSpec] | None) -> tuple[str, ...]:
    """Validates the `devices` argument of `ReplicaStrategy`.

    Args:
      devices: None for every logical GPU (the host CPU, with a warning, when there is none);
        a sequence of ints (GPU ids) or of device-name strings such as "/gpu:1" or "/cpu:1".

    Returns:
      The canonical device names, one replica each, in the order given.

    Raises:
      ValueError: for an empty sequence, a wrong type, a duplicate or a missing device.
    """
    if devices is None:
        gpus = available_gpus()
        if gpus:
            return tuple(gpus)
        logging.warning(
            "ReplicaStrategy found no GPU; running one replica on %s. Pass devices=[...] "
            "(e.g. logical CPUs '/cpu:0', '/cpu:1') to replicate anyway.",
            _FALLBACK_DEVICE,
        )
        return (_FALLBACK_DEVICE,)
    if isinstance(devices, (str, int)) or not isinstance(devices, Sequence):
        raise ValueError(
            "`devices` must be None or a list of GPU ids or device names, e.g. [0, 1] or "
            f"['/gpu:0', '/gpu:1']. Received: devices={devices!r}. "
            f"Available devices: {available_devices()}"
        )
    if not devices:
        raise ValueError(
            "`devices` must name at least one device; pass None to use every GPU. "
            f"Received: devices={devices!r}. Available devices: {available_devices()}"
        )
    names = tuple(device_name(device, "devices", devices) for device in devices)
    check_no_duplicates(names, "devices", devices)
    _check_available(names, devices, "devices")
    return names


def resolve_device(device: str, argument: str) -> str:
    """Validates a single device-name argument such as `parameter_device`."""
    if not isinstance(device, str):
        raise ValueError(
            f"`{argument}` must be a device name such as '/cpu:0' or '/gpu:0'. "
            f"Received: {argument}={device!r}"
        )
    name = canonical_name(device, argument)
    _check_available((name,), device, argument)
    return name


def device_name(device: DeviceSpec, argument: str, received: Sequence[DeviceSpec]) -> str:
    """The canonical name of one entry of a device list: a GPU id (int) or a device name.

    Args:
      device: the entry.
      argument: the list's argument name ("devices", "gpus"), for error messages.
      received: the whole list, for error messages.
    """
    # bool is an int subclass; `True` as a GPU id is always a mistake.
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ValueError(f"GPU ids must be >= 0. Received: {argument}={received!r}")
        return f"/device:GPU:{device}"
    if isinstance(device, str):
        return canonical_name(device, argument, received)
    raise ValueError(
        f"Each entry of `{argument}` must be a GPU id (int) or a device name (str). "
        f"Received: {device!r} of type {type(device).__name__} in {argument}={received!r}. "
        f"Available devices: {available_devices()}"
    )


def check_no_duplicates(names: Sequence[str], argument: str, received: object) -> None:
    """Raises when two entries of a device list (`names`, canonical) name the same device."""
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Each device may hold only one replica; {duplicates} appear more than once in "
            f"`{argument}`. Received: {argument}={received!r}. "
            f"Available devices: {available_devices()}"
        )


def _check_available(names: Sequence[str], devices: object, argument: str) -> None:
    available = available_devices()
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"`{argument}` names devices this process does not have: {missing}. "
            f"Available devices: {available}. Received: {argument}={devices!r}. To test on a "
            "CPU-only machine, split the CPU into logical devices before TensorFlow "
            "initializes: replica_strategy.logical_devices.split_cpu(n), which calls "
            "tf.config.set_logical_device_configuration."
        )
