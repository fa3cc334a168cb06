"""Adapts tf_keras optimizers' `apply_gradients` (legacy `OptimizerV2` and `Optimizer`).

`ReplicaStrategy` keeps one copy of each variable, so a step applies ONE gradient to it. Told to
aggregate (the default), tf_keras sums the replicas' gradients, then transforms them (clipnorm,
clipvalue, global_clipnorm, gradient_transformers) and applies them: every replica then holds
the same gradient, and the one copy takes it once. Nothing is inspected on that path.

Told NOT to aggregate (`experimental_aggregate_gradients=False` for `OptimizerV2`,
`skip_gradients_aggregation=True` for `Optimizer`), tf_keras hands the update each replica's own
gradient. MirroredStrategy applies each to that replica's copy; tf_keras refuses the flag for
CentralStorageStrategy, the same one-copy design. Here the flag means what tf_keras documents,
"the caller aggregated the gradients": the promise is checked before anything is applied (in a
graph, every replica's gradient is one cross-replica reduction's result; eagerly, the values
are equal), and a `NotImplementedError` says how to fix the call when it does not hold.

Installed on the classes once, when a `ReplicaStrategy` scope is entered (`install`); other
strategies pass straight through. Tested by `tests/tf_keras_optimizer_test.py::AggregationTest`
and tf_keras' own `custom_training_loop_optimizer_test.py` (vendored in `tests/upstream/tf_keras/`),
which fail if tf_keras renames the method or its flags.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from tensorflow.python.distribute import values
from tensorflow.python.framework import ops

from replica_strategy._extended import ReplicaExtended

_INSTALLED_MARK = "_replica_strategy_checks_aggregation"
# The ops whose per-device outputs are one all-reduce's result without a common input tensor.
_ALL_REDUCE_OPS = ("NcclAllReduce", "CollectiveReduce", "CollectiveReduceV2")


def install() -> None:
    """Wraps both tf_keras optimizer classes' `apply_gradients` (idempotent)."""
    from tf_keras.src.optimizers import optimizer  # noqa: PLC0415  (tf_keras is optional)
    from tf_keras.src.optimizers.legacy import optimizer_v2  # noqa: PLC0415

    _wrap(
        optimizer_v2.OptimizerV2,
        lambda kwargs: kwargs.get("experimental_aggregate_gradients", True) is False,
    )
    _wrap(optimizer.Optimizer, _skips_aggregation)


def _skips_aggregation(kwargs) -> bool:
    return bool(kwargs.get("skip_gradients_aggregation", False)) or (
        kwargs.get("experimental_aggregate_gradients", True) is False
    )


def _wrap(optimizer_class, told_not_to_aggregate) -> None:
    apply_gradients = optimizer_class.apply_gradients
    if getattr(apply_gradients, _INSTALLED_MARK, False):
        return

    @functools.wraps(apply_gradients)
    def checked_apply_gradients(self, grads_and_vars, *args, **kwargs):
        if told_not_to_aggregate(kwargs) and _in_replica_strategy():
            grads_and_vars = list(grads_and_vars)
            tf.distribute.get_replica_context().merge_call(
                _require_one_gradient, args=([pair for pair in grads_and_vars],)
            )
        return apply_gradients(self, grads_and_vars, *args, **kwargs)

    setattr(checked_apply_gradients, _INSTALLED_MARK, True)
    optimizer_class.apply_gradients = checked_apply_gradients


def _in_replica_strategy() -> bool:
    replica_context = tf.distribute.get_replica_context()
    return (
        replica_context is not None
        and isinstance(replica_context.strategy.extended, ReplicaExtended)
        and replica_context.num_replicas_in_sync > 1
    )


def _require_one_gradient(strategy, grads_and_vars):
    """Raises unless every replica holds the same gradient for each variable (see above)."""
    del strategy  # Unused: merge_call's first argument.
    for gradient, variable in grads_and_vars:
        if gradient is None or _is_one_gradient(gradient):
            continue
        raise NotImplementedError(
            "ReplicaStrategy keeps one copy of each variable, so it cannot apply a different "
            f"gradient from each replica to {getattr(variable, 'name', variable)!r}, as "
            "MirroredStrategy does to its copies with apply_gradients(..., "
            "experimental_aggregate_gradients=False) (skip_gradients_aggregation=True for "
            "tf_keras.optimizers.Optimizer). Let the optimizer aggregate them (the default), or "
            "sum them yourself first: tf.distribute.get_replica_context().all_reduce('sum', "
            "gradients)."
        )


def _is_one_gradient(gradient) -> bool:
    if not isinstance(gradient, values.DistributedValues):
        return True  # merge_call regroups a value every replica shares into itself.
    parts = [getattr(part, "values", part) for part in gradient.values]  # IndexedSlices too.
    if all(isinstance(part, ops.EagerTensor) for part in parts):
        return all(np.array_equal(part.numpy(), parts[0].numpy()) for part in parts[1:])
    roots = [_root(part) for part in parts]
    if all(root is roots[0] for root in roots):
        return True
    return all(
        getattr(root, "op", None) is not None and root.op.type in _ALL_REDUCE_OPS for root in roots
    )


def _root(tensor):
    """`tensor`, seen through the identities that `all_reduce` and device copies add."""
    while (
        tf.is_tensor(tensor)
        and not isinstance(tensor, ops.EagerTensor)
        and tensor.op.type in ("Identity", "IdentityN")
    ):
        tensor = tensor.op.inputs[tensor.value_index]
    return tensor
