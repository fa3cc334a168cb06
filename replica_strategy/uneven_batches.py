"""Exact gradients on uneven splits: every row weighs 1/B, as on one device.

Every model under a `ReplicaStrategy` is weighed so by default, under every split, the even
split included; `exact_uneven_batches` is kept for code written when it was an opt-in. The
arithmetic is in `_row_weights`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from replica_strategy import _keras3_trainer, _row_weights
from replica_strategy.strategy import ReplicaStrategy

if TYPE_CHECKING:
    import keras

ModelT = TypeVar("ModelT", bound="keras.Model")


def exact_uneven_batches(model: ModelT) -> ModelT:
    """Kept for old code: exact rows on uneven splits are now every model's default.

    By tf.distribute's convention (MirroredStrategy's), each replica's mean loss weighs 1/N in
    the gradient, so when B rows do not split evenly the rows of short replicas weigh more than
    on one device. `ReplicaStrategy` now weighs every row 1/B for every model, under every
    split, the even split included, as on one device and as in the legacy `multi_gpu_model`.
    This call checks the model and changes nothing more (it once opted the model in).

    ```python
    with strategy.scope():
        model = build_model()
        model.compile(optimizer="sgd", loss="mse")
    replica_strategy.exact_uneven_batches(model)
    model.fit(x, y, batch_size=10)  # 4, 4, 2 rows on 3 replicas: the one-device gradient,
    # with or without the call.
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
    _row_weights.ask_for_exact_rows(model)
    _keras3_trainer.weight_losses_by_rows(model)
    return model
