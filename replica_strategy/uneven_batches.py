"""Exact gradients on uneven splits: every row weighs 1/B, as on one device.

`exact_uneven_batches` opts a Keras 3 model in; `multi_gpu_model` does it for its models.
The arithmetic is in `weight_replica_losses_by_rows`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, TypeVar

import tensorflow as tf

from replica_strategy.strategy import ReplicaStrategy

if TYPE_CHECKING:
    import keras

ModelT = TypeVar("ModelT", bound="keras.Model")

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "auto")
_WEIGHTED_MARK = "_replica_strategy_weights_rows"


def exact_uneven_batches(model: ModelT) -> ModelT:
    """Makes a compiled Keras 3 model in `ReplicaStrategy.scope()` exact on uneven splits.

    By tf.distribute's convention, each replica's mean loss weighs 1/N in the gradient, so when
    B rows do not split evenly the rows of short replicas weigh more than on one device.
    After this call every row weighs 1/B, as on one device and as in the legacy
    `multi_gpu_model` (whose models get this automatically). Even splits are unchanged.

    ```python
    with strategy.scope():
        model = build_model()
        model.compile(optimizer="sgd", loss="mse")
    replica_strategy.exact_uneven_batches(model)
    model.fit(x, y, batch_size=10)  # 4, 4, 2 rows on 3 replicas: the one-device gradient.
    ```

    Args:
      model: a Keras 3 model compiled in a `ReplicaStrategy` scope, whose compiled losses
        average over the batch (Keras' default reduction, "sum_over_batch_size").

    Returns:
      `model`, for chaining. Calling it twice changes nothing more.

    Raises:
      ValueError: for a model not built under `ReplicaStrategy`, or not compiled yet.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if not isinstance(strategy, ReplicaStrategy):
        raise ValueError(
            "`exact_uneven_batches` needs a model built in `ReplicaStrategy.scope()`. "
            f"Received: a model under {type(strategy).__name__}."
        )
    if getattr(model, "optimizer", None) is None or not hasattr(model.optimizer, "scale_loss"):
        raise ValueError(
            f"`exact_uneven_batches` needs a compiled Keras 3 model; compile {model.name!r} "
            "first (tf_keras models are not supported)."
        )
    weight_replica_losses_by_rows(model, strategy)
    return model


def weight_replica_losses_by_rows(model, strategy) -> None:
    """Makes the gradient of an uneven split the single-device gradient, as the legacy model's.

    Keras averages each replica's loss over its own n_r rows and weights it 1/N; on uneven
    splits that over-weights the rows of short replicas. Scaling replica r's loss, for the
    gradient only, by N * n_r / B weights every row 1/B: the sum over replicas is the mean
    over the whole batch. Even splits are unchanged (the factor is 1); the reported loss and
    metrics were already exact. Applies when every compiled loss averages over the batch.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "scale_loss"):
        return
    scale_loss = optimizer.scale_loss
    if getattr(scale_loss, _WEIGHTED_MARK, False):
        return

    def scale_loss_by_rows(loss):
        return _weighted_by_rows(scale_loss(loss), model, strategy)

    setattr(scale_loss_by_rows, _WEIGHTED_MARK, True)
    object.__setattr__(optimizer, "scale_loss", scale_loss_by_rows)


def weight_tf_keras_losses_by_rows(model, strategy) -> None:
    """`weight_replica_losses_by_rows` for tf_keras, whose train step has no `scale_loss`.

    tf_keras updates its loss metric inside `compute_loss`, before it returns: weighting the
    returned loss changes the gradient only.
    """
    compute_loss = model.compute_loss

    @functools.wraps(compute_loss)
    def compute_loss_weighted_by_rows(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        return None if loss is None else _weighted_by_rows(loss, model, strategy)

    object.__setattr__(model, "compute_loss", compute_loss_weighted_by_rows)


def _weighted_by_rows(loss, model, strategy):
    """`loss` * N * n_r / B when every compiled loss averages over the batch, else `loss`."""
    if not _every_loss_averages_over_the_batch(model):
        return loss
    factor = strategy.num_replicas_in_sync * strategy.extended.replica_row_fraction()
    return loss * tf.cast(factor, loss.dtype)


def _every_loss_averages_over_the_batch(model) -> bool:
    if hasattr(model, "_compile_loss"):  # Keras 3
        entries = getattr(model._compile_loss, "_flat_losses", None) or []
        loss_objects = [entry[1] for entry in entries]
    else:  # tf_keras
        loss_objects = getattr(getattr(model, "compiled_loss", None), "_losses", None) or []
    reductions = [getattr(loss, "reduction", None) for loss in loss_objects if loss is not None]
    return bool(reductions) and all(reduction in _MEAN_REDUCTIONS for reduction in reductions)
