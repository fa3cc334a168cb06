"""Makes tf_keras accept `ReplicaStrategy` where it checks strategies against allow-lists.

`ReplicaStrategy` registers itself when it is made and each time its scope is entered, if
tf_keras is imported by then (`_adapters`); `register_tf_keras()` does it by hand.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from replica_strategy._extended import ReplicaExtended

_REGISTERED_MARK = "_replica_strategy_registered"
# The classes BackupAndRestore is to accept: `strategy.py` adds `ReplicaStrategy` (`accept`), so
# that this module, which `ReplicaStrategy` installs, need not import it back.
_STRATEGY_CLASSES = []


def accept(strategy_class) -> None:
    """Adds `strategy_class` to the classes tf_keras' `BackupAndRestore` accepts."""
    if strategy_class not in _STRATEGY_CLASSES:
        _STRATEGY_CLASSES.append(strategy_class)


def register_tf_keras() -> None:
    """Makes tf_keras accept `ReplicaStrategy` where it checks strategies by allow-list.

    tf_keras refuses strategies it does not know in two places:
    - mixed precision: `loss_scale_optimizer.strategy_supports_loss_scaling()` (read by the
      `mixed_float16` policy and `LossScaleOptimizer`), which exists because a strategy with
      fewer variable copies than replicas would unscale gradients wrongly in *some* designs;
      ReplicaStrategy unscales each replica's gradients before summing them, which is exact;
    - `tf_keras.callbacks.BackupAndRestore`, whose `_supported_strategies` tuple is built in
      `__init__`.
    This function wraps both (the first returns True for `ReplicaStrategy`, the second appends
    `ReplicaStrategy` to the tuple), marking what it wrapped so calling it again does nothing.
    `ReplicaStrategy` calls it when it is made and when its scope is entered, if tf_keras is
    imported by then; call it yourself if you construct tf_keras' `BackupAndRestore` or
    `LossScaleOptimizer` outside any scope before tf_keras met a `ReplicaStrategy`.
    """
    from tf_keras.src import callbacks  # noqa: PLC0415  (tf_keras is optional)
    from tf_keras.src.mixed_precision import loss_scale_optimizer  # noqa: PLC0415

    original_supports = loss_scale_optimizer.strategy_supports_loss_scaling
    if not getattr(original_supports, _REGISTERED_MARK, False):

        @functools.wraps(original_supports)
        def strategy_supports_loss_scaling():
            if tf.distribute.has_strategy() and isinstance(
                tf.distribute.get_strategy().extended, ReplicaExtended
            ):
                return True
            return original_supports()

        setattr(strategy_supports_loss_scaling, _REGISTERED_MARK, True)
        loss_scale_optimizer.strategy_supports_loss_scaling = strategy_supports_loss_scaling

    original_init = callbacks.BackupAndRestore.__init__
    if not getattr(original_init, _REGISTERED_MARK, False):

        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):  # noqa: N807
            original_init(self, *args, **kwargs)
            self._supported_strategies = (*self._supported_strategies, *_STRATEGY_CLASSES)

        setattr(__init__, _REGISTERED_MARK, True)
        callbacks.BackupAndRestore.__init__ = __init__
