"""The variable types of `ReplicaStrategy`.

Two kinds, chosen by `synchronization`:
- `ParameterVariable` (ON_WRITE, the default): ONE variable on the parameter device, read by every
  replica, written once per step. Replica-context writes are aggregated across replicas first
  (SUM, MEAN, ONLY_FIRST_REPLICA). NONE means "every replica would write the same thing", as
  under MirroredStrategy, whose checkpoints hold replica 0's copy: replica 0's write is applied.
- ON_READ (metrics, accumulators): one copy per replica device, summed or averaged when read,
  exactly TensorFlow's own `SyncOnReadVariable` as MirroredStrategy builds it.
"""

from __future__ import annotations

from tensorflow.python.distribute import distribute_lib, distribute_utils, ps_values, values_util
from tensorflow.python.eager import context
from tensorflow.python.framework import ops, tensor_util
from tensorflow.python.ops import array_ops, variable_scope

_NONE = variable_scope.VariableAggregation.NONE
_ONLY_FIRST_REPLICA = variable_scope.VariableAggregation.ONLY_FIRST_REPLICA


class ParameterVariable(ps_values.AggregatingVariable):
    """One variable on the parameter device, shared by every replica.

    Differs from TensorFlow's `AggregatingVariable` only in replica-context writes with
    aggregation NONE (or ONLY_FIRST_REPLICA), which Keras 3 uses for BatchNormalization
    statistics, Dropout seeds and loss-scale counters: instead of raising, replica 0's value is
    written once per step, through `merge_call`, or directly inside `tf.cond` branches where
    TensorFlow forbids `merge_call`. Writes work outside the strategy's scope too (restoring).
    """

    def _assign_func(self, *args, **kwargs):
        with distribute_lib.enter_or_assert_strategy(self._distribute_strategy):
            if (
                self._aggregation not in (_NONE, _ONLY_FIRST_REPLICA)
                or distribute_lib.in_cross_replica_context()
            ):
                return super()._assign_func(*args, **kwargs)
            update = kwargs.pop("f")
            if getattr(ops.get_default_graph(), "is_control_flow_graph", False):
                return self._write_from_first_replica(update, *args, **kwargs)

            def merge_fn(strategy, value, use_locking=False, name=None, read_value=True):
                value = values_util.apply_aggregation(strategy, value, _ONLY_FIRST_REPLICA, self)
                return strategy.extended.update(
                    self,
                    update,
                    args=(value,),
                    kwargs={"use_locking": use_locking, "name": None, "read_value": read_value},
                )

            replica_context = distribute_lib.get_replica_context()
            return replica_context.merge_call(merge_fn, args=args, kwargs=kwargs)

    def _write_from_first_replica(self, update, *args, **kwargs):
        """Writes without `merge_call` (Keras 3's LossScaleOptimizer updates its counters there).

        Outside control flow, `merge_call` is used instead: it orders every replica's reads
        before the one write.
        """
        replica_context = distribute_lib.get_replica_context()

        def write():
            with ops.device(self._v.device):
                return update(self._v, *args, **kwargs)

        return write_from_first_replica(
            tensor_util.constant_value(replica_context.replica_id_in_sync_group),
            write,
            self._v.read_value,
            kwargs.get("read_value", True),
        )

    def _copy_trackable_to_cpu(self, object_map):
        self._v._copy_trackable_to_cpu(object_map)
        if self not in object_map:
            object_map[self] = ParameterVariable(
                self._distribute_strategy, object_map[self._v], self._aggregation
            )


def create_parameter_variable(strategy, next_creator, aggregation, **kwargs):
    """Creates the one copy of a variable and wraps it so replica writes are aggregated."""
    collections = kwargs.pop("collections", None)
    kwargs["collections"] = []
    variable = next_creator(**kwargs)
    wrapped = ParameterVariable(strategy, variable, aggregation)
    if not context.executing_eagerly():
        _replace_in_collections(variable, wrapped, collections, kwargs.get("trainable", True))
    return wrapped


def create_replica_local_variable(strategy, devices, next_creator, **kwargs):
    """Creates one copy per replica device, wrapped as a `SyncOnReadVariable`."""

    def create_copies(**kwargs):
        copies = []
        for replica_id, device in enumerate(devices):
            with ops.device(device):
                if replica_id > 0:
                    primary = copies[0]
                    kwargs["initial_value"] = lambda primary=primary: initial_value_of(primary)
                    # A trailing "/" makes the name absolute, outside the current name scope.
                    kwargs["name"] = f"{primary.name.split(':')[0]}/replica_{replica_id}/"
                with context.device_policy(context.DEVICE_PLACEMENT_SILENT):
                    copies.append(next_creator(**kwargs))
        return copies

    return distribute_utils.create_mirrored_variable(
        strategy,
        create_copies,
        distribute_utils.VARIABLE_CLASS_MAPPING,
        distribute_utils.VARIABLE_POLICY_MAPPING,
        **kwargs,
    )


def initial_value_of(variable):
    """What a copy of `variable` starts from: its value (its initial value in a TF1 graph)."""
    if context.executing_eagerly() or ops.inside_function():
        return array_ops.identity(variable.value())
    return array_ops.identity(variable.initial_value)


def write_from_first_replica(replica_id, write, read, read_value):
    """A replica-context write inside `tf.cond` or loop branches, where TF forbids `merge_call`.

    Replica 0 writes (`write()`); the others only read (`read()`, when `read_value`), so the
    variable is written once per step, with replica 0's value, as `merge_call` would.
    """
    if replica_id == 0:
        return write()
    return read() if read_value else None


def _replace_in_collections(variable, wrapped, collections, trainable):
    graph = ops.get_default_graph()
    collections = list(collections or [ops.GraphKeys.GLOBAL_VARIABLES])
    if trainable:
        collections.append(ops.GraphKeys.TRAINABLE_VARIABLES)
        trainable_variables = graph.get_collection_ref(ops.GraphKeys.TRAINABLE_VARIABLES)
        if variable in trainable_variables:
            trainable_variables.remove(variable)
    graph.add_to_collections(collections, wrapped)
