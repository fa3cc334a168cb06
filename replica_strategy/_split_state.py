"""The split in force: its mode and the fractions each replica takes of a batch.

`SplitState` holds the fractions as a float64 host variable: the input pipeline
(`_split_input`) reads it in every step, so changing it does not retrace. It is a plain
variable, made outside any strategy and tracked by nothing: the split is how this machine
runs, not model state, so checkpoints neither hold nor restore it. With "auto", `auto`
(`_auto_split.AutoSplit`) measures the steps and moves the fractions.
"""

from __future__ import annotations

from tensorflow.python.eager import context
from tensorflow.python.framework import dtypes, ops

from replica_strategy import _auto_split
from replica_strategy import split as split_lib


class SplitState:
    """The split of `ReplicaStrategy`: its mode, the fractions in force, and "auto"."""

    def __init__(self, split, devices, host):
        self.devices = tuple(devices)
        self.host = host
        num_replicas = len(self.devices)
        self.mode = split_lib.parse_split(split, num_replicas)
        # One replica takes every batch whole, whatever the split.
        self.resplits = self.mode != split_lib.EVEN and num_replicas > 1
        self.fractions = None
        self.auto = None
        if not self.resplits:
            return
        initial = (1.0 / num_replicas,) * num_replicas if self.mode == split_lib.AUTO else self.mode
        self.fractions = _auto_split.host_variable(initial, dtypes.float64, host, "replica_split")
        if self.mode == split_lib.AUTO:
            self.auto = _auto_split.AutoSplit(self.fractions, num_replicas, host)

    def in_force(self) -> tuple[float, ...]:
        """The fractions of each batch the replicas take now, in replica order (sum 1)."""
        if self.fractions is None:
            if isinstance(self.mode, tuple):
                return self.mode
            return (1.0 / len(self.devices),) * len(self.devices)
        with ops.init_scope():
            return tuple(float(value) for value in self.fractions.numpy())

    def start_measurement(self, inputs, rows):
        """`(measurement, inputs)` for a `run` on `inputs`: with "auto" in a traced step with
        batched inputs, an `_auto_split.Measurement` and the inputs gated on its start; else
        `(None, inputs)`. Eager runs are not measured: their replicas are Python threads that
        meet at each reduction, so their timestamps tell thread scheduling apart, not devices.
        """
        if self.auto is None or rows is None or context.executing_eagerly():
            return None, inputs
        return self.auto.start(inputs, rows)
