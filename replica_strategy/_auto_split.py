"""`split="auto"`: each replica's busy time in a step, and the controller that balances it.

**Measurement** (`Measurement`, one per measured `run`). A step's replicas meet at its
synchronization points: every reduction, gather and all-reduce they reach inside one `run`
(`_step.Step.synchronize`). Between two points, a replica computes and then waits for the
others. Timestamps, taken in the graph on the host once one element of each value is copied
there (so a GPU's asynchronous kernels are counted), mark: each replica's start (its inputs
ready; its work is gated on that timestamp), each replica's values ready at each point, each
point's result, and each replica's outputs of `run` ready. A replica's busy time is the sum
over the segments of (its values ready - the later of the segment's start and the previous
point's result), at least 0: waiting for the other replicas is not counted, and a row count,
a synchronized BatchNorm or a metric reduced mid-step neither ends the measurement nor lends
one replica another's time (`busy_times`).

**Controller** (`adapt`, a pure function of plain values or tensors, run eagerly in tests and
in the graph inside the step on host variables, so a new split retraces nothing). It balances
busy times directly, never fitting a cost per row (a replica's fixed cost per step would then
read as slowness and drive its share to the floor):
- the first measured step (warm-up) is dropped, and so is a step in which a replica has no
  rows or no busy time;
- per replica, the least busy time over a window of `MEASUREMENTS_BEFORE_MOVING` counted steps
  (interference only adds time, so the least is the replica's own); at the window's end, if
  the relative imbalance (max - min) / mean of those exceeds `DEADBAND` (or the split is
  already moving and it exceeds `SETTLED`: hysteresis), each share is multiplied by
  (mean / busy) ** `DAMPING`,
  renormalized, changed by at most `LARGEST_MOVE`, and kept at or above
  `FLOOR_OF_EVEN_SHARE` of an even share; a new window then starts;
- at the next decision, a move whose busy times did not follow the rows (estimated response
  below `MIN_RESPONSE`) is undone, and the split holds until the estimate recovers.

Equal devices, whatever their fixed cost, stay even: their busy times are already equal.
"""

from __future__ import annotations

import collections

import numpy as np
from tensorflow.python.distribute import distribute_utils, values
from tensorflow.python.eager import def_function
from tensorflow.python.framework import constant_op, dtypes, ops, tensor_util
from tensorflow.python.ops import (
    array_ops,
    array_ops_stack,
    cond,
    gen_logging_ops,
    math_ops,
    resource_variable_ops,
    script_ops,
    sort_ops,
)
from tensorflow.python.platform import tf_logging
from tensorflow.python.util import nest

# Measured steps at the split in force before it may move.
MEASUREMENTS_BEFORE_MOVING = 4
# The split starts moving when (max - min) / mean of the least busy times of a window exceeds DEADBAND,
# and keeps moving, a move every MEASUREMENTS_BEFORE_MOVING steps, while it exceeds SETTLED.
DEADBAND = 0.15
SETTLED = 0.05
# Each move multiplies a share by (mean busy time / its busy time) ** DAMPING ...
DAMPING = 0.7
# ... and changes no share by more than this.
LARGEST_MOVE = 0.05
# Each replica keeps at least this part of an even share.
FLOOR_OF_EVEN_SHARE = 0.1
# Measured steps dropped at the start (tracing, first allocations).
WARM_UP_STEPS = 1

# A move must show: the next measurement's change of the (log) busy-time imbalance, over the
# (log) change of the shares, is the replicas' response to rows (1: busy time proportional to
# rows, 0: rows change nothing). Below MIN_RESPONSE the move is undone and the split holds;
# after a move undone, the response estimate recovers by RECOVERY of the way to 1 per decision.
MIN_RESPONSE = 0.5
RECOVERY = 0.02

ControllerState = collections.namedtuple(
    "ControllerState",
    [
        "fractions",
        "window_busy",
        "measured",
        "moving",
        "warm_up_left",
        "response",
        "last_move",
        "last_imbalance",
    ],
)
ControllerState.__doc__ = """The controller's state: `fractions` in force, per-replica least busy
time `window_busy` of the window, `measured` steps in the window, `moving`
(hysteresis), `warm_up_left` measured steps still to drop, the estimated `response` of busy
times to rows, and the `last_move` (log shares, centered) with the `last_imbalance` (log busy
times, centered) it answered (zeros: no move to judge)."""


def initial_state(num_replicas):
    """The controller's state before any step: an even split."""
    return ControllerState(
        fractions=np.full([num_replicas], 1.0 / num_replicas),
        window_busy=np.zeros([num_replicas]),
        measured=np.int64(0),
        moving=False,
        warm_up_left=np.int64(WARM_UP_STEPS),
        response=1.0,
        last_move=np.zeros([num_replicas]),
        last_imbalance=np.zeros([num_replicas]),
    )


def adapt(state, busy, rows):
    """The controller's next state after a step with per-replica `busy` times and `rows`.

    Pure: `state` a `ControllerState` of numbers or tensors, the result one of tensors.
    """
    f64 = dtypes.float64
    fractions = math_ops.cast(state.fractions, f64)
    window_busy = math_ops.cast(state.window_busy, f64)
    measured = math_ops.cast(state.measured, dtypes.int64)
    moving = math_ops.cast(state.moving, dtypes.bool)
    warm_up_left = math_ops.cast(state.warm_up_left, dtypes.int64)
    response = math_ops.cast(state.response, f64)
    last_move = math_ops.cast(state.last_move, f64)
    last_imbalance = math_ops.cast(state.last_imbalance, f64)
    busy = math_ops.cast(busy, f64)
    rows = math_ops.cast(rows, f64)
    usable = math_ops.reduce_all(rows > 0) & math_ops.reduce_all(busy > 0)
    counts = usable & (warm_up_left <= 0)

    count = measured + 1
    # Interference (another job, the OS) only adds time: the least busy time of the window is
    # the replica's own, robust to the spikes a shared machine gives.
    new_window_busy = array_ops.where_v2(measured > 0, math_ops.minimum(window_busy, busy), busy)
    mean = math_ops.reduce_mean(new_window_busy)
    imbalance = math_ops.div_no_nan(
        math_ops.reduce_max(new_window_busy) - math_ops.reduce_min(new_window_busy), mean
    )
    ready = count >= MEASUREMENTS_BEFORE_MOVING
    decides = counts & ready
    wants_move = (imbalance > DEADBAND) | (moving & (imbalance > SETTLED))

    # How the last move changed the imbalance, against how it changed the shares.
    log_imbalance = _centered(math_ops.log(math_ops.maximum(new_window_busy, 1e-12)))
    moved_before = math_ops.reduce_sum(last_move * last_move)
    has_last = moved_before > 0
    observed = math_ops.div_no_nan(
        math_ops.reduce_sum((log_imbalance - last_imbalance) * last_move), moved_before
    )
    observed = math_ops.minimum(math_ops.maximum(observed, 0.0), 1.0)
    new_response = array_ops.where_v2(has_last, observed, response + RECOVERY * (1.0 - response))
    undo = decides & has_last & (observed < MIN_RESPONSE)
    move = decides & wants_move & ~undo & (new_response >= MIN_RESPONSE)

    proposed = fractions * math_ops.pow(math_ops.div_no_nan(mean, new_window_busy), DAMPING)
    proposed = proposed / math_ops.reduce_sum(proposed)
    proposed = fractions + math_ops.minimum(
        math_ops.maximum(proposed - fractions, -LARGEST_MOVE), LARGEST_MOVE
    )
    num_replicas = math_ops.cast(array_ops.size(fractions), f64)
    proposed = _with_floor(
        proposed / math_ops.reduce_sum(proposed), FLOOR_OF_EVEN_SHARE / num_replicas
    )
    undone = fractions * math_ops.exp(-last_move)
    undone = undone / math_ops.reduce_sum(undone)
    new_fractions = array_ops.where_v2(move, proposed, array_ops.where_v2(undo, undone, fractions))
    applied = _centered(
        math_ops.log(math_ops.maximum(new_fractions, 1e-12))
        - math_ops.log(math_ops.maximum(fractions, 1e-12))
    )
    restart = decides
    return ControllerState(
        fractions=new_fractions,
        window_busy=array_ops.where_v2(
            restart,
            array_ops.zeros_like(window_busy),
            array_ops.where_v2(counts, new_window_busy, window_busy),
        ),
        measured=array_ops.where_v2(
            restart,
            constant_op.constant(0, dtypes.int64),
            array_ops.where_v2(counts, count, measured),
        ),
        moving=array_ops.where_v2(decides, move, moving),
        warm_up_left=array_ops.where_v2(
            usable & (warm_up_left > 0), warm_up_left - 1, warm_up_left
        ),
        response=array_ops.where_v2(decides, new_response, response),
        last_move=array_ops.where_v2(
            move, applied, array_ops.where_v2(decides, array_ops.zeros_like(last_move), last_move)
        ),
        last_imbalance=array_ops.where_v2(move, log_imbalance, last_imbalance),
    )


def _centered(values):
    return values - math_ops.reduce_mean(values)


def busy_times(starts, synchronizations, ends):
    """Each replica's busy time in a step, from its timestamps (numbers or scalar tensors).

    `starts[i]`: replica i's start; `synchronizations`: per point, `(ready, result)`, `ready[i]`
    when replica i's values were ready and `result` when the point's result was; `ends[i]`:
    replica i's outputs ready (None: the last segment is not measured). The points are taken
    in the order their results came (the order they were traced in need not be the order they
    ran in). A segment counts from the later of its start and the previous point's result, and
    at least 0.
    """
    num_replicas = len(starts)
    busy = [constant_op.constant(0.0, dtypes.float64)] * num_replicas
    begins = [math_ops.cast(start, dtypes.float64) for start in starts]
    ends = [None] * num_replicas if ends is None else ends
    if synchronizations:
        results = array_ops_stack.stack(
            [math_ops.cast(result, dtypes.float64) for _, result in synchronizations]
        )
        ready = array_ops_stack.stack(
            [
                array_ops_stack.stack([math_ops.cast(time, dtypes.float64) for time in times])
                for times, _ in synchronizations
            ]
        )
        order = sort_ops.argsort(results, stable=True)
        results = array_ops.gather(results, order)
        ready = array_ops.gather(ready, order)
        for point in range(len(synchronizations)):
            for replica in range(num_replicas):
                busy[replica] += _segment(begins[replica], ready[point, replica])
                begins[replica] = math_ops.maximum(begins[replica], results[point])
    for replica in range(num_replicas):
        if ends[replica] is not None:
            busy[replica] += _segment(begins[replica], ends[replica])
    return array_ops_stack.stack(busy)


def _segment(begin, end):
    return math_ops.maximum(math_ops.cast(end, dtypes.float64) - begin, 0.0)


class AutoSplit:
    """`split="auto"` of one strategy: the controller's state as host variables."""

    def __init__(self, fractions, num_replicas, host):
        self.fractions = fractions
        self.num_replicas = num_replicas
        self.host = host
        initial = initial_state(num_replicas)
        self._window_busy = host_variable(
            initial.window_busy, dtypes.float64, host, "replica_split_busy_times"
        )
        self._measured = host_variable(
            initial.measured, dtypes.int64, host, "replica_split_measured"
        )
        self._moving = host_variable(initial.moving, dtypes.bool, host, "replica_split_moving")
        self._warm_up_left = host_variable(
            initial.warm_up_left, dtypes.int64, host, "replica_split_warm_up_left"
        )
        self._response = host_variable(
            initial.response, dtypes.float64, host, "replica_split_response"
        )
        self._last_move = host_variable(
            initial.last_move, dtypes.float64, host, "replica_split_last_move"
        )
        self._last_imbalance = host_variable(
            initial.last_imbalance, dtypes.float64, host, "replica_split_last_imbalance"
        )
        # Read by every timestamp, written by nothing: see `_timestamp_once`.
        self._anchor = host_variable(0.0, dtypes.float64, host, "replica_split_anchor")

    def start(self, inputs, rows):
        """A `Measurement` of the `run` on `inputs`, and the inputs to run it on (gated)."""
        starts = [
            self.timestamp_after(distribute_utils.select_replica(replica, inputs))
            for replica in range(self.num_replicas)
        ]
        if any(start is None for start in starts):
            return None, inputs
        return Measurement(self, starts, rows), _after_starts(inputs, starts)

    def timestamp_after(self, structure):
        """A host timestamp taken once every numeric tensor of `structure` is computed.

        The timestamp waits on a copy to the host of one element of each tensor, so that it
        follows the computation itself, not only its launch (GPU kernels run asynchronously).
        None when `structure` holds no numeric tensor.
        """
        markers = []
        for leaf in nest.flatten(_components(structure), expand_composites=True):
            if not tensor_util.is_tf_type(leaf) or not (
                leaf.dtype.is_floating or leaf.dtype.is_integer
            ):
                continue
            with ops.device(leaf.device):
                first = array_ops.reshape(leaf, [-1])[:1]
                markers.append(math_ops.reduce_sum(math_ops.cast(first, dtypes.float64)))
        if not markers:
            return None
        with ops.device(self.host):
            ready = math_ops.add_n([array_ops.identity(marker) for marker in markers])
            return _timestamp_once(ready, self._anchor)

    def update(self, busy, rows):
        """Runs the controller on one step's `busy` times and `rows`, in the graph."""
        with ops.device(self.host):
            old = ControllerState(
                self.fractions.read_value(),
                self._window_busy.read_value(),
                self._measured.read_value(),
                self._moving.read_value(),
                self._warm_up_left.read_value(),
                self._response.read_value(),
                self._last_move.read_value(),
                self._last_imbalance.read_value(),
            )
            rows = array_ops_stack.stack([math_ops.cast(count, dtypes.float64) for count in rows])
            new = adapt(old, busy, rows)
            assigns = [
                self._window_busy.assign(new.window_busy),
                self._measured.assign(new.measured),
                self._moving.assign(new.moving),
                self._warm_up_left.assign(new.warm_up_left),
                self._response.assign(new.response),
                self._last_move.assign(new.last_move),
                self._last_imbalance.assign(new.last_imbalance),
            ]
            changed = math_ops.reduce_any(math_ops.not_equal(new.fractions, old.fractions))

            def apply():
                assign = self.fractions.assign(new.fractions)
                with ops.control_dependencies([assign]):
                    script_ops.eager_py_func(_log_change, [old.fractions, new.fractions], [])
                return array_ops.identity(changed)

            with ops.control_dependencies(assigns):
                cond.cond(changed, apply, lambda: array_ops.identity(changed))


class Measurement:
    """The timestamps of one measured `run` (see the module docstring)."""

    def __init__(self, auto, starts, rows):
        self._auto = auto
        self._starts = starts
        self._rows = rows
        self._synchronizations = []

    def ready_times(self, value):
        """When each replica's part of `value` is ready (None: some part holds no number)."""
        times = [
            self._auto.timestamp_after(distribute_utils.select_replica(replica, value))
            for replica in range(self._auto.num_replicas)
        ]
        return None if any(time is None for time in times) else times

    def synchronized(self, ready, result):
        """Records a synchronization point: `ready` (from `ready_times`) and its `result`."""
        if ready is None:
            return
        done = self._auto.timestamp_after(result)
        if done is not None:
            self._synchronizations.append((ready, done))

    def finish(self, outputs):
        """Ends the measurement at the replicas' `outputs` and runs the controller."""
        ends = [
            self._auto.timestamp_after(distribute_utils.select_replica(replica, outputs))
            for replica in range(self._auto.num_replicas)
        ]
        if not self._synchronizations and any(end is None for end in ends):
            return
        with ops.device(self._auto.host):
            busy = busy_times(self._starts, self._synchronizations, ends)
        self._auto.update(busy, self._rows)


def _components(structure):
    """`structure` with distributed values (a reduction's result) as their components."""
    return nest.map_structure(
        lambda leaf: list(leaf.values) if isinstance(leaf, values.DistributedValues) else leaf,
        structure,
    )


def _after_starts(inputs, starts):
    """`inputs` with replica i's parts computed only after `starts[i]`.

    Without this, a replica's work could start before its start timestamp runs (the runtime
    may have no thread free for the timestamp), and the measurement would miss that work.
    """

    def gate(leaf):
        if not isinstance(leaf, values.PerReplica) or len(leaf.values) != len(starts):
            return leaf
        gated = []
        for part, start in zip(leaf.values, starts, strict=True):
            if not tensor_util.is_tf_type(part):
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
        array_ops.where_v2(below, floor - shares, array_ops.zeros_like(shares))
    )
    room = array_ops.where_v2(below, array_ops.zeros_like(shares), shares - floor)
    return array_ops.where_v2(
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
        "balancing the replicas' busy times",
        _rounded(new),
        _rounded(old),
    )


def _rounded(fractions):
    return [round(float(value), 3) for value in np.asarray(fractions)]


def host_variable(initial, dtype, host, name):
    """A plain variable on `host`, made outside any strategy and any function being traced."""
    with ops.init_scope(), ops.device(host):
        # ResourceVariable directly, not tf.Variable: no strategy's variable creator sees it.
        return resource_variable_ops.ResourceVariable(
            np.asarray(initial, dtype.as_numpy_dtype), trainable=False, name=name
        )
