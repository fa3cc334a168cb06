"""Builds a strategy by name: `ReplicaStrategy` or one of TensorFlow's, side by side.

The example trainers, the benchmarks and the tests compare `ReplicaStrategy` with
TensorFlow's strategies on the same devices; this is the one place that builds them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import tensorflow as tf

from replica_strategy.multi_worker import KerasMultiWorkerMirroredStrategy
from replica_strategy.strategy import ReplicaStrategy

STRATEGY_NAMES = ("replica", "mirrored", "central_storage", "one_device", "multi_worker", "default")

# Each MirroredStrategy gets collective keys of its own (see `_mirrored`).
_MIRRORED_KEY_RANGE = 100_000
_mirrored_lock = threading.Lock()
_mirrored_count = 0


def make_strategy(
    name: str, devices: Sequence[str] | None = None, **replica_options: object
) -> tf.distribute.Strategy:
    """The strategy `name` on `devices`.

    Args:
      name: one of `STRATEGY_NAMES`:
        - "replica": `ReplicaStrategy(devices, **replica_options)`.
        - "mirrored": `tf.distribute.MirroredStrategy(devices)`, with collective keys of its
          own, so that several can run in one process.
        - "central_storage": `tf.distribute.experimental.CentralStorageStrategy` computing on
          `devices`.
        - "one_device": `tf.distribute.OneDeviceStrategy` on the first of `devices` ("/cpu:0"
          without devices).
        - "multi_worker": `KerasMultiWorkerMirroredStrategy`, its cluster from `TF_CONFIG`;
          it ignores `devices`.
        - "default": the default strategy (no distribution); it ignores `devices`.
      devices: device names, one replica each; None for the strategy's own default.
      **replica_options: further keyword arguments of `ReplicaStrategy` (`mirror_weights`,
        `split`, ...), for `name="replica"` only.

    Returns:
      A `tf.distribute.Strategy`.

    Raises:
      ValueError: for an unknown name, or `replica_options` with a strategy other than
        "replica".
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(
            f"Unknown strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}. "
            f"Received: name={name!r}"
        )
    if name == "replica":
        return ReplicaStrategy(None if devices is None else list(devices), **replica_options)
    if replica_options:
        raise ValueError(
            f"{sorted(replica_options)} apply to ReplicaStrategy only (name='replica'). "
            f"Received: name={name!r}, {replica_options}"
        )
    if name == "mirrored":
        return _mirrored(None if devices is None else list(devices))
    if name == "central_storage":
        return tf.distribute.experimental.CentralStorageStrategy(
            compute_devices=None if devices is None else list(devices)
        )
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0] if devices else "/cpu:0")
    if name == "multi_worker":
        return KerasMultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _mirrored(devices: list[str] | None) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy whose collective group keys no other instance in the process uses.

    On CPUs (and on logical GPUs) MirroredStrategy all-reduces with collective ops, and every
    instance numbers its collective groups from the same start: a second instance on another
    device set then joins a group another size already holds ("joining a group with size 4,
    but that group has size 2") and every later collective fails. TensorFlow offsets the
    start by the class attribute `_collective_key_base` ("Only set this in tests"); it is
    read in the constructor only, so each instance here is made under a base of its own.
    tests/strategies_test.py fails loudly if TensorFlow renames or stops reading it.
    """
    global _mirrored_count
    strategy_class = tf.distribute.MirroredStrategy
    with _mirrored_lock:
        _mirrored_count += 1
        default_base = strategy_class._collective_key_base
        strategy_class._collective_key_base = _MIRRORED_KEY_RANGE * _mirrored_count
        try:
            return strategy_class(devices)
        finally:
            strategy_class._collective_key_base = default_base
