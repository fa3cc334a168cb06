"""Every row weighs 1/B in the gradient, on any split: the arithmetic, shared by both Kerases.

Keras (3 and tf_keras) averages each replica's loss over its own n_r rows and scales it by
1/N, tf.distribute's convention (MirroredStrategy's). When B rows do not split evenly (a
partial last batch under the even split, or any batch under an uneven split) the rows of
short replicas then weigh more than on one device. Scaling replica r's loss, for the gradient
only, by N * n_r / B makes the sum over replicas the mean over all B rows, as on one device
and as in the legacy `multi_gpu_model`. Batches that split evenly are unchanged (the factor
is 1).

Every model trained under a `ReplicaStrategy` is weighed so (`ReplicaExtended.weights_rows`)
when its compiled losses all average over the batch. Losses that all sum over the batch are
exact already (Keras scales only averaged losses by 1/N) and are left alone. The weighting
cannot reach other models: another reduction ("mean_with_sample_weight", "none", a mix of
sums and means), a model without a compiled loss, or one that overrides `train_step` or
`compute_loss`; each such model gets one warning, naming it and the fix. The adapters that
apply it are `_keras3_trainer` and `_tf_keras_training`.

`_set_weighting` turns the weighting off and on for the whole process: internal, for the
benchmark and tests that measure what it costs (`benchmarks/row_weighting_cost.py`).
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from replica_strategy._extended import ReplicaExtended

_EXACT_MARK = "_replica_strategy_exact_rows"
_WARNED_MARK = "_replica_strategy_warned_about_rows"
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "auto")
_SUM_REDUCTIONS = ("sum",)
_weighting = True


def _set_weighting(on: bool) -> None:
    """Internal (benchmarks, tests): turns the row weighting on or off for models traced next."""
    global _weighting  # noqa: PLW0603
    _weighting = bool(on)


def ask_for_exact_rows(model) -> None:
    """Marks `model` as asking for 1/B per row (now every model's default; kept for old callers)."""
    object.__setattr__(model, _EXACT_MARK, True)  # Not state for Keras to track or save.


def weighted_by_rows(loss, model, *, overridden=()):
    """`loss` * N * n_r / B in a replica of a `ReplicaStrategy` where `model` weighs rows.

    `overridden`: the step methods the caller found overridden on `model`'s class (no
    weighting then, and one warning).
    """
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy.extended, ReplicaExtended):
        return loss
    wanted = getattr(model, _EXACT_MARK, False) or strategy.extended.weights_rows
    if not (_weighting and wanted) or not weighs_rows(model, overridden=overridden):
        return loss
    factor = strategy.num_replicas_in_sync * strategy.extended.replica_row_fraction()
    return loss * tf.cast(factor, loss.dtype)


def weighs_rows(model, *, overridden=()) -> bool:
    """Whether the weighting applies to `model`; warns once per model when it cannot reach it.

    False without a warning for losses that all sum over the batch (exact already). Raises
    when Keras no longer has the private attribute the compiled losses are read from.
    """
    if overridden:
        names = " and ".join(f"`{name}`" for name in overridden)
        _warn_once(model, f"it overrides {names}")
        return False
    reductions = _loss_reductions(model)
    if reductions is None:  # Not built yet: decided when the loss is traced.
        return True
    if reductions and all(reduction in _MEAN_REDUCTIONS for reduction in reductions):
        return True
    if reductions and all(reduction in _SUM_REDUCTIONS for reduction in reductions):
        return False
    if not reductions:
        _warn_once(model, "it has no compiled loss")
    else:
        _warn_once(
            model, f"its compiled losses have reductions {sorted(set(map(str, reductions)))}"
        )
    return False


def overridden_methods(model, base, names) -> tuple[str, ...]:
    """Which of `names` `model`'s class defines differently from `base`."""
    return tuple(
        name for name in names if getattr(type(model), name, None) is not getattr(base, name, None)
    )


def _warn_once(model, reason) -> None:
    if getattr(model, _WARNED_MARK, False):
        return
    object.__setattr__(model, _WARNED_MARK, True)
    warnings.warn(
        f"ReplicaStrategy cannot weigh every row of model {model.name!r} 1/B in the gradient: "
        f"{reason}. On a batch that does not split evenly over the replicas (a partial last "
        "batch), its gradient follows tf.distribute's convention (each replica's mean loss "
        "weighs 1/num_replicas_in_sync), not one device's. To train as on one device, compile "
        'it with losses that average over the batch (reduction="sum_over_batch_size", the '
        "default), or, in your own train_step/compute_loss, differentiate each replica's "
        "mean loss times `tf.distribute.get_strategy().extended.replica_row_fraction()` "
        "(instead of dividing it by num_replicas_in_sync).",
        UserWarning,
        stacklevel=2,
    )


def _loss_reductions(model):
    """The reductions of `model`'s compiled losses; None while Keras has not built them."""
    if hasattr(model, "_compile_loss"):  # Keras 3
        compile_loss = model._compile_loss
        if compile_loss is None:
            return []
        entries = _private(compile_loss, "_flat_losses", "keras")
        if entries is None:
            return None
        loss_objects = [entry[1] for entry in entries]
    else:  # tf_keras
        container = getattr(model, "compiled_loss", None)
        if container is None:
            return []
        if not getattr(container, "_built", True):
            return None
        loss_objects = tf.nest.flatten(_private(container, "_losses", "tf_keras"))
    return [getattr(loss, "reduction", None) for loss in loss_objects if loss is not None]


def _private(owner, attribute, package):
    """`owner.attribute`, a Keras private: raises a clear error if this Keras renamed it."""
    if not hasattr(owner, attribute):
        version = getattr(__import__(package), "__version__", "unknown")
        raise RuntimeError(
            f"ReplicaStrategy reads the compiled losses from {type(owner).__name__}."
            f"{attribute}, which {package} {version} does not have. Use a Keras version this "
            "replica_strategy release supports, or report the Keras version."
        )
    return getattr(owner, attribute)
