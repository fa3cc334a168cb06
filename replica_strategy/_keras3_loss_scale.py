"""Adapts Keras 3's `LossScaleOptimizer._tf_apply` (`keras.src.optimizers.loss_scale_optimizer`).

Under a strategy that merges (every tf.distribute strategy but TPU's), Keras decides whether to
apply a step from replica 0's `check_finite` on gradients that are not yet summed (its comment
assumes they are): a step whose gradients overflow on another replica only is applied, and the
sum writes inf or NaN into every weight (MirroredStrategy does so too). Under `ReplicaStrategy`
each replica counts its own non-finite gradients, the count is summed through the strategy's
own cross-replica reduction (`ReplicaContext.all_reduce`, so a strategy spanning processes could
combine it too), and the step is skipped on every replica, the loss scale halved once, when any
replica overflowed: one device's behaviour. The rest is Keras' design: the apply, or the
halving, in a `cond` in cross-replica context, reached through `merge_call`.

A replica given no rows of a partial batch may compute NaN gradients (BatchNormalization's mean
over no rows). Those mean nothing: they are replaced by zeros, as the strategy's own reductions
do, and that replica counts as finite.

Wrapped on the class, once (`install`); other strategies and one replica run Keras' own code.
Tested by `tests/keras3_loss_scale_test.py`, which fails loudly if Keras renames `_tf_apply`,
`check_finite` or the `_stateful_handle_*` methods it calls.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from replica_strategy import _empty_replicas
from replica_strategy._extended import ReplicaExtended

_INSTALLED_MARK = "_replica_strategy_skips_on_any_replica"


def install() -> None:
    """Wraps `LossScaleOptimizer._tf_apply` (idempotent)."""
    from keras.src.optimizers.loss_scale_optimizer import LossScaleOptimizer  # noqa: PLC0415

    tf_apply = LossScaleOptimizer._tf_apply
    if getattr(tf_apply, _INSTALLED_MARK, False):
        return

    @functools.wraps(tf_apply)
    def _tf_apply(self, grads, trainable_variables=None):
        replica_context = tf.distribute.get_replica_context()
        if not _in_replica_strategy_replica(replica_context):
            return tf_apply(self, grads, trainable_variables)
        return _apply_unless_any_replica_overflowed(
            self, replica_context, grads, trainable_variables
        )

    setattr(_tf_apply, _INSTALLED_MARK, True)
    LossScaleOptimizer._tf_apply = _tf_apply


def _in_replica_strategy_replica(replica_context) -> bool:
    return (
        replica_context is not None
        and isinstance(replica_context.strategy.extended, ReplicaExtended)
        and replica_context.num_replicas_in_sync > 1
    )


def _apply_unless_any_replica_overflowed(optimizer, replica_context, grads, trainable_variables):
    grads = _finite_if_no_rows(grads, replica_context.strategy.extended)
    non_finite = tf.cast(tf.logical_not(optimizer.check_finite(grads)), tf.float32)
    replicas_non_finite = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, non_finite)

    def handle_cross_replica(distribution, grads, trainable_variables, replicas_non_finite):
        # After the all-reduce every replica holds the same count: any one of them decides.
        finite = tf.equal(distribution.experimental_local_results(replicas_non_finite)[0], 0.0)

        def apply_fn():
            distribution.extended.call_for_each_replica(
                optimizer._stateful_handle_finite_grads,  # pylint: disable=protected-access
                args=(grads, trainable_variables),
            )

        # In cross-replica context, as Keras: a branch of a cond in replica context cannot
        # call `merge_call`, which the inner optimizer's apply does.
        tf.cond(
            finite,
            apply_fn,
            optimizer._stateful_handle_non_finite_grads,  # pylint: disable=protected-access
        )

    replica_context.merge_call(
        handle_cross_replica, args=(grads, trainable_variables, replicas_non_finite)
    )


def _finite_if_no_rows(grads, extended):
    """`grads`, as a list, with non-finite elements zeroed when this replica has no rows."""
    grads = list(grads)  # A list on every replica: `merge_call` regroups them element-wise.
    replica_rows = extended.replica_rows()
    if replica_rows is None:
        return grads
    return _empty_replicas.finite_if_no_rows(replica_rows[0], grads)
