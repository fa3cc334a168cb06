"""Adapts tf_keras' `Model.compute_loss` to weigh every row 1/B (`_row_weights`).

tf_keras' `train_step` differentiates what `compute_loss` returns, and `compute_loss` updates
the loss metric before it returns: weighting the returned loss changes the gradient only
(`test_step` discards it). Wrapped on the class once, when a `ReplicaStrategy` scope is
entered with tf_keras imported (`install`); it changes nothing outside a `ReplicaStrategy`
replica. A model that overrides `compute_loss` or `train_step` is not weighted (even through
`super().compute_loss`): `make_train_function`, which `fit` and `train_on_batch` call, is
wrapped too, to warn about it once. Tested by
`tests/integration/tf_keras_test.py::test_uneven_splits_train_exactly_like_one_device` and
`test_even_split_partial_batch_matches_one_device`, which fail if tf_keras renames the method.
"""

from __future__ import annotations

import functools

from replica_strategy import _row_weights
from replica_strategy._extended import ReplicaExtended

_INSTALLED_MARK = "_replica_strategy_weights_rows"
_CHECKED_MARK = "_replica_strategy_checks_row_weighting"
_STEP_METHODS = ("train_step", "compute_loss")


def install() -> None:
    """Wraps `tf_keras.Model.compute_loss` (idempotent)."""
    from tf_keras.src.engine import training  # noqa: PLC0415  (tf_keras is optional)

    compute_loss = training.Model.compute_loss
    if not getattr(compute_loss, _INSTALLED_MARK, False):

        @functools.wraps(compute_loss)
        def compute_loss_weighted_by_rows(self, *args, **kwargs):
            loss = compute_loss(self, *args, **kwargs)
            if loss is None:
                return None
            return _row_weights.weighted_by_rows(loss, self, overridden=_overridden(self))

        setattr(compute_loss_weighted_by_rows, _INSTALLED_MARK, True)
        training.Model.compute_loss = compute_loss_weighted_by_rows

    make_train_function = training.Model.make_train_function
    if not getattr(make_train_function, _CHECKED_MARK, False):

        @functools.wraps(make_train_function)
        def make_train_function_checked(self, *args, **kwargs):
            if isinstance(self.distribute_strategy.extended, ReplicaExtended):
                _row_weights.weighs_rows(self, overridden=_overridden(self))
            return make_train_function(self, *args, **kwargs)

        setattr(make_train_function_checked, _CHECKED_MARK, True)
        training.Model.make_train_function = make_train_function_checked


def _overridden(model):
    from tf_keras.src.engine import training  # noqa: PLC0415

    return _row_weights.overridden_methods(model, training.Model, _STEP_METHODS)
