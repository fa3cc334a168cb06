"""Zeroes what replicas with no rows of an uneven batch computed that is not finite."""

from __future__ import annotations

from tensorflow.python.distribute import values
from tensorflow.python.framework import indexed_slices, ops, tensor_util
from tensorflow.python.ops import array_ops, cond, math_ops
from tensorflow.python.util import nest


def finite_from_empty_replicas(value, rows):
    """`value` with the non-finite elements of what replicas with no rows computed zeroed.

    A replica given zero rows of an uneven batch still runs, and some layers give it NaN
    gradients (BatchNormalization's mean over no rows); summing those would poison the
    weights. Its finite values count, as they would on one device: its share of a
    regularization loss, a constant it all-reduces. `rows` are the step's row counts (ints, or
    tensors known at run time); None (no batched input) or all positive ints: `value` as is.
    """
    if rows is None or all(isinstance(count, int) and count > 0 for count in rows):
        return value
    leaves = nest.flatten(value)
    replica_leaves = [
        index
        for index, leaf in enumerate(leaves)
        if isinstance(leaf, values.PerReplica) and len(leaf.values) == len(rows)
    ]
    if not replica_leaves:
        return value
    checked = [
        finite_if_no_rows(replica_rows, [leaves[index].values[replica] for index in replica_leaves])
        for replica, replica_rows in enumerate(rows)
    ]
    for position, index in enumerate(replica_leaves):
        leaves[index] = values.PerReplica(
            tuple(checked[replica][position] for replica in range(len(rows)))
        )
    return nest.pack_sequence_as(value, leaves)


def finite_if_no_rows(rows, tensors):
    """One replica's `tensors`, non-finite elements zeroed if it has no `rows` (int or tensor)."""
    parts = [
        tensor.values if isinstance(tensor, indexed_slices.IndexedSlices) else tensor
        for tensor in tensors
    ]
    floating = [
        position
        for position, part in enumerate(parts)
        if tensor_util.is_tf_type(part) and part.dtype.is_floating
    ]
    if not floating or (isinstance(rows, int) and rows > 0):
        return tensors
    if isinstance(rows, int):
        checked = [_finite(parts[position]) for position in floating]
    else:
        with ops.device(parts[floating[0]].device):
            checked = cond.cond(
                math_ops.greater(rows, 0),
                lambda: [array_ops.identity(parts[position]) for position in floating],
                lambda: [_finite(parts[position]) for position in floating],
            )
    result = list(tensors)
    for position, part in zip(floating, checked, strict=True):
        tensor = tensors[position]
        result[position] = (
            indexed_slices.IndexedSlices(part, tensor.indices, tensor.dense_shape)
            if isinstance(tensor, indexed_slices.IndexedSlices)
            else part
        )
    return result


def _finite(tensor):
    return array_ops.where_v2(math_ops.is_finite(tensor), tensor, array_ops.zeros_like(tensor))
