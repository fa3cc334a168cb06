"""Adapts tf_keras' `Model.compute_loss` to weigh every row 1/B (`_row_weights`).

tf_keras' `train_step` differentiates what `compute_loss` returns, and `compute_loss` updates
the loss metric before it returns: weighting the returned loss changes the gradient only.
Wrapped on the class once, when a `ReplicaStrategy` scope is entered with tf_keras imported
(`install`); it changes nothing outside a `ReplicaStrategy` replica, nor for a model that does
not weigh rows. A model that overrides `compute_loss` itself is not weighted. Tested by
`tests/integration/tf_keras_test.py::test_uneven_splits_train_exactly_like_one_device`, which fails if
tf_keras renames the method.
"""

from __future__ import annotations

import functools

from replica_strategy import _row_weights

_INSTALLED_MARK = "_replica_strategy_weights_rows"


def install() -> None:
    """Wraps `tf_keras.Model.compute_loss` (idempotent)."""
    from tf_keras.src.engine import training  # noqa: PLC0415  (tf_keras is optional)

    compute_loss = training.Model.compute_loss
    if getattr(compute_loss, _INSTALLED_MARK, False):
        return

    @functools.wraps(compute_loss)
    def compute_loss_weighted_by_rows(self, *args, **kwargs):
        loss = compute_loss(self, *args, **kwargs)
        return None if loss is None else _row_weights.weighted_by_rows(loss, self)

    setattr(compute_loss_weighted_by_rows, _INSTALLED_MARK, True)
    training.Model.compute_loss = compute_loss_weighted_by_rows
