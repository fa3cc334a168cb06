"""Logical CPU devices: several replicas on a machine without GPUs, for tests and examples.

TensorFlow can split the host CPU into logical devices ("/cpu:0", "/cpu:1", ...), each a
device a replica can run on. They share the machine's cores and memory, so they test
behaviour, not speed. The split must happen before TensorFlow's runtime initializes (before
any op runs or any device is listed).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


def cpu_names(count: int) -> list[str]:
    """The names of the first `count` logical CPUs: ["/cpu:0", "/cpu:1", ...]."""
    return [f"/cpu:{index}" for index in range(count)]


def split_cpu(count: int) -> list[str]:
    """Gives this process at least `count` logical CPUs; returns the first `count` names.

    Idempotent: once the runtime has initialized, the logical CPUs that exist are used, if
    there are enough.

    Args:
      count: how many logical CPUs the caller needs (at least 1).

    Returns:
      `cpu_names(count)`.

    Raises:
      ValueError: for a `count` below 1.
      RuntimeError: when TensorFlow already initialized with fewer logical CPUs; the message
        says how many there are.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"`count` must be an int of at least 1. Received: count={count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Raises once the runtime is initialized; what exists then is checked below.
    with contextlib.suppress(RuntimeError):
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    available = len(tf.config.list_logical_devices("CPU"))
    if available < count:
        raise RuntimeError(
            f"{count} logical CPUs were asked for, but TensorFlow already initialized with "
            f"{available}. Split the CPU before anything else uses TensorFlow, or ask for at "
            f"most {available}. Received: count={count}"
        )
    return cpu_names(count)
