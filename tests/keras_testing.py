"""Helpers shared by the Keras 3 and tf_keras tests: build in a scope, compare weights."""

import numpy as np


def in_scope(strategy, build, *args, **kwargs):
    """Calls `build(*args, **kwargs)` in `strategy.scope()` (no scope for None)."""
    if strategy is None:
        return build(*args, **kwargs)
    with strategy.scope():
        return build(*args, **kwargs)


def max_weight_difference(first, second) -> float:
    """The largest absolute difference between two models' weights."""
    return max(
        float(np.abs(a - b).max())
        for a, b in zip(first.get_weights(), second.get_weights(), strict=True)
    )
