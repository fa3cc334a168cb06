"""Adapts Keras 3's TensorFlow trainer (`keras.src.backend.tensorflow.trainer.TensorFlowTrainer`).

Two adaptations, both for models whose `distribute_strategy` is a `ReplicaStrategy`:

- **The first batch, reduced to build the model.** Before `fit`, `evaluate` and
  `train_on_batch`, Keras' `_maybe_symbolic_build` calls
  `strategy.reduce("MEAN", first_batch, axis=None)` only to read the batch's shapes and dtypes.
  An uneven split gives the replicas different row counts, which a reduction across replicas
  rejects (MirroredStrategy crashes there). Inside that call the strategy hands back replica
  0's rows instead (`ReplicaExtended.reducing_first_batch_to_build`): they have the shapes and
  dtypes, with the most rows of any replica, so the model builds whatever the split.
- **Every row weighs 1/B in the gradient** (`_row_weights`, on every split):
  `weight_losses_by_rows` wraps the model's optimizer's `scale_loss`, the last step of the
  loss before `tape.gradient` in Keras' `train_step`. The reported loss and metrics are
  computed before it, and were exact already. A model that overrides `train_step` or
  `compute_loss` is not weighted; `make_train_function`, which `fit` and `train_on_batch` call,
  warns about it once.

Installed on the class once (`install`). Tested by `tests/integration/keras_test.py`:
`test_fit_with_an_uneven_first_batch` and `test_even_split_partial_batch_trains_like_one_device`
fail loudly if Keras renames `_maybe_symbolic_build` or `scale_loss`.
"""

from __future__ import annotations

import functools

from replica_strategy import _row_weights
from replica_strategy._extended import ReplicaExtended

_INSTALLED_MARK = "_replica_strategy_builds_from_first_replica"
_WEIGHTED_MARK = "_replica_strategy_weights_rows"
_CHECKED_MARK = "_replica_strategy_checks_row_weighting"
_STEP_METHODS = ("train_step", "compute_loss")


def install() -> None:
    """Wraps `TensorFlowTrainer._maybe_symbolic_build` (idempotent)."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer  # noqa: PLC0415

    symbolic_build = TensorFlowTrainer._maybe_symbolic_build
    if getattr(symbolic_build, _INSTALLED_MARK, False):
        return

    @functools.wraps(symbolic_build)
    def _maybe_symbolic_build(self, *args, **kwargs):
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or not isinstance(strategy.extended, ReplicaExtended):
            return symbolic_build(self, *args, **kwargs)
        weight_losses_by_rows(self)
        with strategy.extended.reducing_first_batch_to_build():
            return symbolic_build(self, *args, **kwargs)

    setattr(_maybe_symbolic_build, _INSTALLED_MARK, True)
    TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _install_train_function_check(TensorFlowTrainer)


def _install_train_function_check(trainer_class) -> None:
    """Wraps `make_train_function` to warn once about a model the weighting cannot reach."""
    make_train_function = trainer_class.make_train_function
    if getattr(make_train_function, _CHECKED_MARK, False):
        return

    @functools.wraps(make_train_function)
    def make_train_function_checked(self, *args, **kwargs):
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is not None and isinstance(strategy.extended, ReplicaExtended):
            _row_weights.weighs_rows(self, overridden=_overridden(self))
        return make_train_function(self, *args, **kwargs)

    setattr(make_train_function_checked, _CHECKED_MARK, True)
    trainer_class.make_train_function = make_train_function_checked


def _overridden(model):
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer  # noqa: PLC0415

    return _row_weights.overridden_methods(model, TensorFlowTrainer, _STEP_METHODS)


def weight_losses_by_rows(model) -> None:
    """Wraps `model.optimizer.scale_loss` to weigh replica losses by rows (idempotent)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "scale_loss"):
        return
    scale_loss = optimizer.scale_loss
    if getattr(scale_loss, _WEIGHTED_MARK, False):
        return

    def scale_loss_by_rows(loss):
        return _row_weights.weighted_by_rows(scale_loss(loss), model, overridden=_overridden(model))

    setattr(scale_loss_by_rows, _WEIGHTED_MARK, True)
    # object.__setattr__: a wrapped method is not state for Keras to track or save.
    object.__setattr__(optimizer, "scale_loss", scale_loss_by_rows)
