"""Every row weighs 1/B in the gradient, on any split: the arithmetic, shared by both Kerases.

Keras (3 and tf_keras) averages each replica's loss over its own n_r rows and scales it by
1/N, tf.distribute's convention. When B rows do not split evenly, the rows of short replicas
then weigh more than on one device. Scaling replica r's loss, for the gradient only, by
N * n_r / B makes the sum over replicas the mean over all B rows, as on one device and as in
the legacy `multi_gpu_model`. Even splits are unchanged (the factor is 1).

A model's losses are weighed so when it asked for it (`ask_for_exact_rows`: through
`exact_uneven_batches` or `multi_gpu_model`) or when its strategy splits batches unevenly by
design (`ReplicaExtended.weights_rows`), and only when every compiled loss averages over the
batch (a summed loss is exact already). The adapters that apply it to a loss are
`_keras3_trainer` and `_tf_keras_training`.
"""

from __future__ import annotations

import tensorflow as tf

from replica_strategy._extended import ReplicaExtended

_EXACT_MARK = "_replica_strategy_exact_rows"
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "auto")


def ask_for_exact_rows(model) -> None:
    """Makes `model` weigh every row 1/B on any split."""
    object.__setattr__(model, _EXACT_MARK, True)  # Not state for Keras to track or save.


def weighted_by_rows(loss, model):
    """`loss` * N * n_r / B in a replica of a `ReplicaStrategy` where `model` weighs rows."""
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy.extended, ReplicaExtended):
        return loss
    wanted = getattr(model, _EXACT_MARK, False) or strategy.extended.weights_rows
    if not wanted or not _every_loss_averages_over_the_batch(model):
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
