"""Adapts Keras 3's TensorFlow optimizer (`keras.src.backend.tensorflow.optimizer.TFOptimizer`).

Keras 3 clips each replica's gradient (`_clip_gradients`) before the cross-replica sum
(`_all_reduce_sum_gradients`), so under any tf.distribute strategy `clipnorm`,
`global_clipnorm` and `clipvalue` act on partial gradients and the weights differ from one
device's. Under `ReplicaStrategy` the clip moves after the sum: it then acts on the whole
batch's gradient, once, as on one device and as in the legacy `multi_gpu_model`. Other
strategies, and one replica, are left exactly as Keras wrote them.

tf.distribute has no hook between the sum and the update, so the two methods are wrapped, on
the class, once (`install`). Tested by `tests/keras3_optimizer_test.py::ClippingTest`, which fails
loudly if Keras renames either method or reorders the two steps.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from replica_strategy._extended import ReplicaExtended

_INSTALLED_MARK = "_replica_strategy_clips_after_sum"


def install() -> None:
    """Wraps `TFOptimizer._clip_gradients` and `_all_reduce_sum_gradients` (idempotent)."""
    from keras.src.backend.tensorflow.optimizer import TFOptimizer  # noqa: PLC0415

    clip_gradients = TFOptimizer._clip_gradients
    all_reduce_sum_gradients = TFOptimizer._all_reduce_sum_gradients
    if getattr(clip_gradients, _INSTALLED_MARK, False):
        return

    @functools.wraps(clip_gradients)
    def _clip_gradients(self, grads):
        if _clips_after_sum(self):
            return grads  # Clipped in `_all_reduce_sum_gradients`, once summed.
        return clip_gradients(self, grads)

    @functools.wraps(all_reduce_sum_gradients)
    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = all_reduce_sum_gradients(self, grads_and_vars)
        if not _clips_after_sum(self):
            return summed
        present = [index for index, (grad, _) in enumerate(summed) if grad is not None]
        clipped = clip_gradients(self, [summed[index][0] for index in present])
        summed = list(summed)
        for index, grad in zip(present, clipped, strict=True):
            summed[index] = (grad, summed[index][1])
        return summed

    setattr(_clip_gradients, _INSTALLED_MARK, True)
    TFOptimizer._clip_gradients = _clip_gradients
    TFOptimizer._all_reduce_sum_gradients = _all_reduce_sum_gradients


def _clips_after_sum(optimizer) -> bool:
    """Whether `optimizer` clips, in a replica of a `ReplicaStrategy` with several replicas."""
    if not (optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue):
        return False
    replica_context = tf.distribute.get_replica_context()
    return (
        replica_context is not None
        and isinstance(replica_context.strategy.extended, ReplicaExtended)
        and replica_context.num_replicas_in_sync > 1
    )
