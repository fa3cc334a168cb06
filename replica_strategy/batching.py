"""How a global batch is split into per-replica sub-batches, and merged back.

The rule, identical to tf.distribute's own rebatching (so results compare row for row with
MirroredStrategy): with B rows on N replicas, each replica in turn takes ceil(B / N) rows until
the batch runs out. Sub-batches are contiguous and in order; none is larger than ceil(B / N);
replicas after the last row get zero rows (10 rows on 4 replicas: 3, 3, 3, 1; 2 on 4: 1, 1, 0, 0).

Datasets are split by TensorFlow's own input pipeline, which follows this rule (tested against
`split_sizes`); `split_batch` and `merge_batches` are the rule for tensors in hand, and
`require_batch_axis` guards `strategy.gather`.

Under `ReplicaStrategy(split=<weights>)` (or "auto") the rule is `weighted_split_sizes`: rows
in proportion to each replica's fraction, largest remainders taking the rows left over;
`weighted_split_sizes_tensor` is the same rule as TensorFlow ops, for the input pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf


def split_sizes(batch_size: int, num_replicas: int) -> list[int]:
    """Per-replica row counts for a batch of `batch_size` rows on `num_replicas` replicas."""
    if batch_size < 0 or num_replicas < 1:
        raise ValueError(
            "Expected batch_size >= 0 and num_replicas >= 1. "
            f"Received: batch_size={batch_size}, num_replicas={num_replicas}"
        )
    rows_per_replica = -(-batch_size // num_replicas)
    return [
        min(rows_per_replica, max(0, batch_size - replica * rows_per_replica))
        for replica in range(num_replicas)
    ]


def split_batch(batch, num_replicas: int) -> list:
    """Splits every tensor of a nested `batch` on axis 0 into `num_replicas` sub-batches.

    Args:
      batch: a tensor, or a nested structure (dict, list, tuple) of tensors that share their
        first dimension.
      num_replicas: how many sub-batches.

    Returns:
      A list of `num_replicas` structures like `batch`, replica i's rows in each.
    """
    leaves = tf.nest.flatten(batch)
    batch_size = _common_batch_size(leaves)
    sizes = split_sizes(batch_size, num_replicas)
    pieces = [tf.split(leaf, sizes, axis=0) for leaf in leaves]
    return [
        tf.nest.pack_sequence_as(batch, [leaf_pieces[replica] for leaf_pieces in pieces])
        for replica in range(num_replicas)
    ]


def merge_batches(sub_batches: Sequence, axis: int = 0):
    """Concatenates per-replica results back into one batch, in replica order.

    Raises:
      ValueError: when a result has no axis to concatenate on (a scalar).
    """

    def concatenate(*pieces):
        pieces = [tf.convert_to_tensor(piece) for piece in pieces]
        require_batch_axis(pieces)
        return tf.concat(pieces, axis=axis)

    return tf.nest.map_structure(concatenate, *sub_batches)


def require_batch_axis(pieces: Sequence) -> None:
    """Raises a clear error when per-replica values have no axis to concatenate on."""
    scalars = [piece for piece in pieces if piece.shape.rank == 0]
    if scalars:
        raise ValueError(
            "Cannot merge per-replica scalars into a batch: a merged output needs a batch "
            f"axis. Received a scalar of dtype {scalars[0].dtype.name}. Reduce it instead, "
            "e.g. strategy.reduce('SUM', value, axis=None), or return it with a batch axis."
        )


def _common_batch_size(leaves) -> int:
    sizes = {
        int(leaf.shape[0]) if leaf.shape.rank else None
        for leaf in map(tf.convert_to_tensor, leaves)
    }
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            "Every input of a batch needs the same first (batch) dimension to be split. "
            f"Received first dimensions: {sorted(sizes, key=str)}"
        )
    return sizes.pop()


def weighted_split_sizes(batch_size: int, fractions: Sequence[float]) -> list[int]:
    """Per-replica row counts for a batch of `batch_size` rows split in proportion to `fractions`.

    Largest-remainder rounding: replica i takes floor(B * f_i) rows, and the rows left over go
    one each to the replicas with the largest remainders, ties to the lower index. The sizes
    sum to B and each is within one row of B * f_i. `fractions` are positive and sum to 1
    (`split.parse_split` makes them so); arithmetic is float64, as in
    `weighted_split_sizes_tensor`, so both give the same sizes.
    """
    if batch_size < 0 or not fractions:
        raise ValueError(
            "Expected batch_size >= 0 and at least one fraction. "
            f"Received: batch_size={batch_size}, fractions={list(fractions)}"
        )
    exact = [float(batch_size) * float(fraction) for fraction in fractions]
    sizes = [math.floor(value) for value in exact]
    remainders = [value - size for value, size in zip(exact, sizes, strict=True)]
    left_over = batch_size - sum(sizes)
    # sorted() is stable: equal remainders keep replica order, so ties go to the lower index.
    for replica in sorted(range(len(sizes)), key=lambda index: -remainders[index])[:left_over]:
        sizes[replica] += 1
    return sizes


def weighted_split_sizes_tensor(batch_size, fractions):
    """`weighted_split_sizes` as TensorFlow ops: int64 sizes from a dynamic batch size.

    Args:
      batch_size: a scalar integer tensor (or int), the rows of this batch.
      fractions: a float64 vector, one positive fraction per replica, summing to 1.

    Returns:
      An int64 vector of row counts summing to `batch_size`.
    """
    fractions = tf.convert_to_tensor(fractions, tf.float64)
    batch_size = tf.cast(batch_size, tf.int64)
    exact = tf.cast(batch_size, tf.float64) * fractions
    floors = tf.math.floor(exact)
    sizes = tf.cast(floors, tf.int64)
    left_over = batch_size - tf.reduce_sum(sizes)
    order = tf.argsort(-(exact - floors), stable=True)
    ranks = tf.math.invert_permutation(order)  # Replica i's place in the order.
    extra = tf.cast(tf.cast(ranks, tf.int64) < left_over, tf.int64)
    return sizes + extra
