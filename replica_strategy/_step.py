"""`Step`: the state of one `strategy.run` call, explicit and in one object.

A `Step` is made for every `run` (`ReplicaExtended._call_for_each_replica`) and holds:
- `rows`: each replica's row count in the step's first batched input (None: no batched input);
- `measurement`: `split="auto"`'s timestamps of the step (`_auto_split.Measurement`), or None;
- `building_from_first_batch`: whether `reduce` is Keras' build-time reduce of the first batch
  (`_keras3_trainer`).

The step in force is held here only, per thread: the thread that calls `run` (where merge
functions run too) enters it with `running`, and each replica thread through the replica
function `wrap` returns. `current()` reads it.
"""

from __future__ import annotations

import contextlib
import threading

from tensorflow.python.autograph.impl import api as autograph
from tensorflow.python.distribute import values
from tensorflow.python.framework import ops
from tensorflow.python.framework import tensor as tensor_lib
from tensorflow.python.ops import array_ops
from tensorflow.python.util import nest


class Step:
    """One `run`: its row counts, its auto-split measurement, and Keras' build flag."""

    def __init__(self, rows=None, measurement=None, building_from_first_batch=False):
        self.rows = rows
        self.measurement = measurement
        self.building_from_first_batch = building_from_first_batch

    def synchronize(self, values, reduce_fn):
        """`reduce_fn(values)`: a synchronization point of the replicas (reduce, gather).

        Every reduction hook goes through here; with a measurement, the point's timestamps
        (each replica's `values` ready, and the result) are recorded.
        """
        if self.measurement is None:
            return reduce_fn(values)
        ready = self.measurement.ready_times(values)
        result = reduce_fn(values)
        self.measurement.synchronized(ready, result)
        return result


class _Holder(threading.local):
    step = None


_holder = _Holder()


def current() -> Step | None:
    """The step in force in this thread (None outside `run` and Keras' build)."""
    return _holder.step


@contextlib.contextmanager
def running(step):
    """Makes `step` the one in force in this thread for the `with` body."""
    outer, _holder.step = _holder.step, step
    try:
        yield step
    finally:
        _holder.step = outer


def wrap(fn, step):
    """`fn`, run with `step` in force in the replica thread that calls it."""

    def replica_fn(*args, **kwargs):
        with running(step):
            return fn(*args, **kwargs)

    return autograph.autograph_artifact(replica_fn)


def rows_per_replica(structure, num_replicas):
    """Each replica's row count in the first batched (dense) per-replica input of `structure`.

    Returns None when no input is batched; else a list of ints (static shapes) or of int64
    scalar tensors (row counts known only at run time).
    """
    for leaf in nest.flatten(structure):
        if not isinstance(leaf, values.PerReplica) or len(leaf.values) != num_replicas:
            continue
        parts = [part for part in leaf.values if isinstance(part, tensor_lib.Tensor)]
        if len(parts) != num_replicas or any(part.shape.rank in (None, 0) for part in parts):
            continue
        static_rows = [part.shape[0] for part in parts]
        if all(rows is not None for rows in static_rows):
            return static_rows
        rows = []
        for part in parts:
            with ops.device(part.device):
                rows.append(array_ops.shape(part, out_type="int64")[0])
        return rows
    return None
