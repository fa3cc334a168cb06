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


def canonical_name(device: str) -> str:
    """Returns the canonical form of a local device name, e.g. "/cpu:1" -> "/device:CPU:1"."""
    spec = tf.DeviceSpec.from_string(device)
    if spec.device_type is None:
        raise ValueError(
            f"A device name must name a device type and index, e.g. '/gpu:0' or '/cpu:1'. "
            f"Received: {device!r}"
        )
    index = 0 if spec.device_index is None else spec.device_index
    return f"/device:{spec.device_type.upper()}:{index}"


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
    _check_no_duplicates(names, devices)
    _check_available(names, devices)
    return names


def resolve_device(device: str, argument: str) -> str:
    """Validates a single device-name argument such as `parameter_device`."""
    if not isinstance(device, str):
        raise ValueError(
            f"`{argument}` must be a device name such as '/cpu:0' or '/gpu:0'. "
            f"Received: {argument}={device!r}"
        )
    name = canonical_name(device)
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
            raise ValueError(f"GPU ids must be >= 0. Received: {argument}={list(received)!r}")
        return f"/device:GPU:{device}"
    if isinstance(device, str):
        return canonical_name(device)
    raise ValueError(
        f"Each entry of `{argument}` must be a GPU id (int) or a device name (str). "
        f"Received: {device!r} of type {type(device).__name__} in {argument}={list(received)!r}. "
        f"Available devices: {available_devices()}"
    )


def _check_no_duplicates(names: Sequence[str], devices: object) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Each device may hold only one replica; {duplicates} appear more than once. "
            f"Received: devices={devices!r}. Available devices: {available_devices()}"
        )


def _check_available(names: Sequence[str], devices: object, argument: str = "devices") -> None:
    available = available_devices()
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"`{argument}` names devices this process does not have: {missing}. "
            f"Available devices: {available}. Received: {argument}={devices!r}. To test on a "
            "CPU-only machine, split the CPU into logical devices with "
            "tf.config.set_logical_device_configuration before TensorFlow initializes."
        )
