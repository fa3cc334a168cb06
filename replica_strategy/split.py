"""The `split` argument of `ReplicaStrategy`: how each batch is shared among the replicas.

- "even" (the default): `batching.split_sizes`' rule, ceil(B / N) rows each until the batch
  runs out, as tf.distribute rebatches.
- a sequence of positive finite weights, one per replica device: rows in proportion
  (`batching.weighted_split_sizes`).
- "auto": starts even and moves rows toward the replicas that compute a row faster
  (`_auto_split`).

`parse_split` checks the argument and turns weights into fractions that sum to 1.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from tensorflow.python.framework import config as tf_config

EVEN = "even"
AUTO = "auto"


def parse_split(split, num_replicas: int) -> str | tuple[float, ...]:
    """`split` checked: "even", "auto", or a tuple of fractions (one per replica, sum 1).

    Raises:
      TypeError: for a value that is neither a string nor a list, tuple or 1-D array of
        numbers (a bool, a number, a dict, ...), or for weights that are not numbers.
      ValueError: for an unknown string, a wrong number of weights, or a weight that is not
        positive and finite.
    """
    if isinstance(split, str):
        if split == AUTO and tf_config.is_op_determinism_enabled():
            # `auto` times each replica with tf.timestamp, which TensorFlow refuses to run
            # under op determinism; fail here, not deep inside the first step.
            raise ValueError(
                '`split="auto"` measures each replica\'s time with tf.timestamp, which '
                "TensorFlow refuses while op determinism is enabled "
                "(tf.config.experimental.enable_op_determinism()). Give the weights instead, "
                f"e.g. split=[3, 1], or disable determinism. Received: split={split!r}"
            )
        if split in (EVEN, AUTO):
            return split
        raise ValueError(
            '`split` must be "even", "auto", or one positive weight per replica device '
            f"({num_replicas} here), e.g. [3, 1]. Received: split={split!r}"
        )
    if isinstance(split, np.ndarray) and split.ndim == 1:
        weights = split.tolist()
    elif isinstance(split, (list, tuple)):
        weights = list(split)
    else:
        raise TypeError(
            '`split` must be "even", "auto", or a list or tuple of one positive weight per '
            f"replica device ({num_replicas} here), not a {type(split).__name__}. "
            f"Received: split={split!r}"
        )
    if len(weights) != num_replicas:
        raise ValueError(
            f"`split` needs one weight per replica device: {num_replicas} devices, "
            f"{len(weights)} weights. Received: split={split!r}"
        )
    if not all(_is_number(weight) for weight in weights):
        raise TypeError(
            f"`split` weights must be numbers (int or float). Received: split={split!r}"
        )
    if not all(math.isfinite(weight) and weight > 0 for weight in map(float, weights)):
        raise ValueError(
            "`split` weights must be positive and finite (not zero, negative, NaN or "
            f"infinite). Received: split={split!r}"
        )
    # Scaled by the largest first, so that huge weights do not overflow their sum.
    largest = max(map(float, weights))
    scaled = [float(weight) / largest for weight in weights]
    total = math.fsum(scaled)
    return tuple(weight / total for weight in scaled)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
