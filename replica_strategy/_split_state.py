"""The split in force, and how `split="auto"` measures the replicas and moves it.

`SplitState` holds the fractions as a float64 host variable: the input pipeline
(`_split_input`) reads it in every step, so changing it does not retrace. It is a plain
variable, made outside any strategy and tracked by nothing: the split is how this machine
runs, not model state, so checkpoints neither hold nor restore it.

"auto" measures each replica's compute time per row inside the executed step: from a
timestamp once the replica's inputs are ready (its work waits for that timestamp, so none of
it can run before) to one once the values the replica hands to the step's first reduction
are (the gradients, in training; its outputs when the step reduces nothing).
Waiting for the other replicas comes after that point, so it is not counted. Per replica, a
moving average of seconds per row (the first measurement, a warm-up, is dropped) gives a
target split proportional to speed, with a floor per replica. When some share is more than
0.03 from its target the split starts moving: half way to the target each step, until every
share is within 0.005 of it (hysteresis: a steady load settles, and noise below 0.03 does not
move it again). Each change is logged, once.

"auto" learns in `tf.function` steps only (Keras' `fit`, or a custom loop's `tf.function`). An
eager `strategy.run` is not measured: its replicas are Python threads that meet at the first
reduction, so their timestamps tell thread scheduling apart, not device speed.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
from tensorflow.python.distribute import distribute_utils, values
from tensorflow.python.eager import context, def_function
from tensorflow.python.framework import dtypes, ops, tensor_util
from tensorflow.python.ops import (
    array_ops,
    array_ops_stack,
    cond,
    gen_logging_ops,
    math_ops,
    resource_variable_ops,
    script_ops,
)
from tensorflow.python.platform import tf_logging
from tensorflow.python.util import nest

from replica_strategy import split as split_lib

# Weight of the newest measurement in the moving average of seconds per row.
_SMOOTHING = 0.2
# Measurements per replica before the split may move (after the dropped warm-up one).
_MEASUREMENTS_BEFORE_MOVING = 3
# Hysteresis: the split starts moving when some replica's target share differs from its share
# by more than the first, and keeps moving, step after step, until within the second.
_START_MOVING_BEYOND = 0.03
_STOP_MOVING_WITHIN = 0.005
# Each move goes this part of the way to the target.
_STEP_TOWARD_TARGET = 0.5
# Each replica keeps at least this share of an even split.
_FLOOR_OF_EVEN_SHARE = 0.1


class SplitState:
    """The split of `ReplicaStrategy`: its mode, fractions in force, and "auto"'s measurements."""

    def __init__(self, split, devices, host):
        self.devices = tuple(devices)
        self.host = host
        num_replicas = len(self.devices)
        self.mode = split_lib.parse_split(split, num_replicas)
        # One replica takes every batch whole, whatever the split.
        self.resplits = self.mode != split_lib.EVEN and num_replicas > 1
        self.fractions = None
        self._auto = None
        if not self.resplits:
            return
        initial = (1.0 / num_replicas,) * num_replicas if self.mode == split_lib.AUTO else self.mode
        self.fractions = _host_variable(initial, dtypes.float64, host, "replica_split")
        if self.mode == split_lib.AUTO:
            self._auto = _AutoSplit(self)

    def in_force(self) -> tuple[float, ...]:
        """The fractions of each batch the replicas take now, in replica order (sum 1)."""
        if self.fractions is None:
            if isinstance(self.mode, tuple):
                return self.mode
            return (1.0 / len(self.devices),) * len(self.devices)
        with ops.init_scope():
            return tuple(float(value) for value in self.fractions.numpy())

    def measuring(self, inputs, rows):
        """Context for one `run` on `inputs`: yields `(finish, inputs)`.

        Run the replicas on the `inputs` yielded (with "auto", each replica's gated on its
        start timestamp), and pass their outputs through `finish`, which measures and adapts.
        """
        if self._auto is None or rows is None or context.executing_eagerly():
            return contextlib.nullcontext((_unchanged, inputs))
        return self._auto.measuring(inputs, rows)

    def note_reduction(self, value):
        """Called with what a reduction of the `run` under way reduces (replica parts)."""
        if self._auto is not None:
            self._auto.note_reduction(value)


class _Measurement:
    def __init__(self, starts):
        self.starts = starts
        self.ends = None


class _AutoSplit:
    """Measures each replica's seconds per row and moves the split toward speed."""

    def __init__(self, state):
        self._state = state
        num_replicas = len(state.devices)
        self._seconds_per_row = _host_variable(
            (0.0,) * num_replicas, dtypes.float64, state.host, "replica_split_seconds_per_row"
        )
        self._measurements = _host_variable(
            (0,) * num_replicas, dtypes.int64, state.host, "replica_split_measurements"
        )
        # Whether the split is on its way to a target (see _START_MOVING_BEYOND).
        self._moving = _host_variable(False, dtypes.bool, state.host, "replica_split_moving")
        # Read by every timestamp, written by nothing: see `_timestamp_once`.
        self._anchor = _host_variable(0.0, dtypes.float64, state.host, "replica_split_anchor")
        self._local = threading.local()

    @contextlib.contextmanager
    def measuring(self, inputs, rows):
        if getattr(self._local, "measurement", None) is not None:
            # A run inside a merge function belongs to the outer run's measurement.
            yield _unchanged, inputs
            return
        measurement = _Measurement(
            [
                self._timestamp_after(distribute_utils.select_replica(replica, inputs))
                for replica in range(len(self._state.devices))
            ]
        )
        inputs = _after_starts(inputs, measurement.starts)
        self._local.measurement = measurement
        try:

            def finish(outputs):
                self._local.measurement = None
                if measurement.ends is None:
                    measurement.ends = self._ends(outputs)
                self._update(measurement, rows)
                return outputs

            yield finish, inputs
        finally:
            self._local.measurement = None

    def note_reduction(self, value):
        measurement = getattr(self._local, "measurement", None)
        if measurement is not None and measurement.ends is None:
            measurement.ends = self._ends(value)

    def _ends(self, value):
        return [
            self._timestamp_after(distribute_utils.select_replica(replica, value))
            for replica in range(len(self._state.devices))
        ]

    def _timestamp_after(self, structure):
        """A host timestamp taken once every numeric tensor of `structure` is computed.

        The timestamp waits on a copy to the host of one element of each tensor, so that it
        follows the computation itself, not only its launch (GPU kernels run asynchronously).
        None when `structure` holds no numeric tensor.
        """
        markers = []
        for leaf in nest.flatten(structure, expand_composites=True):
            if not tensor_util.is_tf_type(leaf) or not (
                leaf.dtype.is_floating or leaf.dtype.is_integer
            ):
                continue
            with ops.device(leaf.device):
                first = array_ops.reshape(leaf, [-1])[:1]
                markers.append(math_ops.reduce_sum(math_ops.cast(first, dtypes.float64)))
        if not markers:
            return None
        with ops.device(self._state.host):
            ready = math_ops.add_n([array_ops.identity(marker) for marker in markers])
            return _timestamp_once(ready, self._anchor)

    def _update(self, measurement, rows):
        times = list(zip(measurement.starts, measurement.ends, strict=True))
        if any(start is None or end is None for start, end in times):
            return
        with ops.device(self._state.host):
            elapsed = array_ops_stack.stack([end - start for start, end in times])
            rows = array_ops_stack.stack([math_ops.cast(count, dtypes.float64) for count in rows])
            self._adapt(elapsed, rows)

    def _adapt(self, elapsed, rows):
        has_rows = rows > 0
        # A clock tick is the least a replica with rows can take.
        per_row = math_ops.maximum(math_ops.div_no_nan(elapsed, rows), 1e-9)
        measurements = self._measurements.read_value()
        average = self._seconds_per_row.read_value()
        counted = has_rows & (measurements >= 1)  # The first measurement is a warm-up.
        average = array_ops.where(
            counted,
            array_ops.where(
                measurements >= 2, (1 - _SMOOTHING) * average + _SMOOTHING * per_row, per_row
            ),
            average,
        )
        measurements = measurements + math_ops.cast(has_rows, dtypes.int64)
        self._seconds_per_row.assign(average)
        self._measurements.assign(measurements)

        num_replicas = len(self._state.devices)
        speed = math_ops.div_no_nan(array_ops.ones_like(average), average)
        target = _with_floor(
            math_ops.div_no_nan(speed, math_ops.reduce_sum(speed)),
            _FLOOR_OF_EVEN_SHARE / num_replicas,
        )
        current = self._state.fractions.read_value()
        moved = current + _STEP_TOWARD_TARGET * (target - current)
        moved = moved / math_ops.reduce_sum(moved)
        ready = math_ops.reduce_all(measurements >= 1 + _MEASUREMENTS_BEFORE_MOVING)
        gap = math_ops.reduce_max(math_ops.abs(target - current))
        change = ready & (
            (gap > _START_MOVING_BEYOND) | (self._moving.read_value() & (gap > _STOP_MOVING_WITHIN))
        )
        self._moving.assign(change)

        def apply():
            assign = self._state.fractions.assign(moved)
            with ops.control_dependencies([assign]):
                script_ops.eager_py_func(_log_change, [current, moved], [])
            return array_ops.identity(change)

        cond.cond(change, apply, lambda: array_ops.identity(change))


def _unchanged(outputs):
    return outputs


def _after_starts(inputs, starts):
    """`inputs` with replica i's parts computed only after `starts[i]` (when not None).

    Without this, a replica's work could start before its start timestamp runs (the runtime
    may have no thread free for the timestamp), and the measurement would miss that work.
    """

    def gate(leaf):
        if not isinstance(leaf, values.PerReplica) or len(leaf.values) != len(starts):
            return leaf
        gated = []
        for part, start in zip(leaf.values, starts, strict=True):
            if start is None or not tensor_util.is_tf_type(part):
                gated.append(part)
                continue
            with ops.device(part.device), ops.control_dependencies([start]):
                gated.append(nest.map_structure(array_ops.identity, part, expand_composites=True))
        return values.PerReplica(tuple(gated))

    return nest.map_structure(gate, inputs)


def _with_floor(shares, floor):
    """`shares` (sum 1) with each at least `floor`: what the small ones gain, the others give
    in proportion to how far above the floor they are (so none falls below it)."""
    below = shares < floor
    shortfall = math_ops.reduce_sum(
        array_ops.where(below, floor - shares, array_ops.zeros_like(shares))
    )
    room = array_ops.where(below, array_ops.zeros_like(shares), shares - floor)
    return array_ops.where(
        below,
        array_ops.fill(array_ops.shape(shares), math_ops.cast(floor, shares.dtype)),
        shares - shortfall * math_ops.div_no_nan(room, math_ops.reduce_sum(room)),
    )


@def_function.function(autograph=False)
def _timestamp_once(ready, anchor):  # pylint: disable=unused-argument
    """A timestamp taken once `ready` is computed, unordered with other stateful ops.

    In a `tf.function`, automatic control dependencies chain every stateful op that takes no
    resource (`tf.timestamp`, `tf.print`, `tf.py_function`, ...) in program order: bare, one
    replica's timestamps would wait for the other replica's. A call that takes a resource
    (`anchor`, which nothing writes) is ordered only with the writes to that resource.
    """
    with ops.control_dependencies([ready]):
        return gen_logging_ops.timestamp()


def _log_change(old, new):
    tf_logging.info(
        "ReplicaStrategy split='auto': each replica's share of the batch is now %s (was %s), "
        "from its measured time per row",
        _rounded(new),
        _rounded(old),
    )


def _rounded(fractions):
    return [round(float(value), 3) for value in np.asarray(fractions)]


def _host_variable(initial, dtype, host, name):
    """A plain variable on `host`, made outside any strategy and any function being traced."""
    with ops.init_scope(), ops.device(host):
        # ResourceVariable directly, not tf.Variable: no strategy's variable creator sees it.
        return resource_variable_ops.ResourceVariable(
            np.asarray(initial, dtype.as_numpy_dtype), trainable=False, name=name
        )
