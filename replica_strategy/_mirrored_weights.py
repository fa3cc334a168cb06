"""`MirroredWeight`: the variable type of `ReplicaStrategy(mirror_weights=True)`.

A trainable variable kept as a MASTER on the parameter device plus one WORKING COPY per replica
device (ZeRO-Offload's placement):
- inside a replica, reads, `handle` and the gradient tape use the local working copy, exactly as
  for TensorFlow's `MirroredVariable` (this class is one);
- everywhere else (cross-replica context, `extended.update`, saving, outside any scope) the
  variable IS its master: name, dtype, `_unique_id` (the key Keras' optimizers file slots
  under), reads, checkpoints and SavedModels see one plain value;
- writes go to the master once, then refresh the working copies: host -> first copy, then
  copy -> copy (`refresh_copies`), so the host sends each new value once.
"""

from __future__ import annotations

import weakref

from tensorflow.python.distribute import device_util, distribute_lib, values, values_util
from tensorflow.python.eager import context
from tensorflow.python.framework import ops, tensor_util
from tensorflow.python.framework import tensor as tensor_lib
from tensorflow.python.ops import (
    array_ops,
    control_flow_ops,
    resource_variable_ops,
    variable_scope,
)
from tensorflow.python.trackable import base as trackable
from tensorflow.python.util import nest

from replica_strategy._variables import initial_value_of, write_from_first_replica

_NONE = variable_scope.VariableAggregation.NONE
_ONLY_FIRST_REPLICA = variable_scope.VariableAggregation.ONLY_FIRST_REPLICA


class MirroredWeight(values.MirroredVariable):
    """A master variable on the parameter device with a working copy on each replica device.

    `values` (TF's per-replica components) are the working copies, in replica order; a replica
    whose device is the parameter device uses the master itself as its copy.
    """

    def __init__(self, strategy, master, copies, aggregation):
        self._master = master
        super().__init__(strategy, copies, aggregation)
        master.handle._distributed_container = weakref.ref(self)

    @property
    def master(self):
        """The one plain variable on the parameter device: what is saved and updated."""
        return self._master

    @property
    def _primary(self):
        # Everything TF derives from `_primary` (name, dtype, shape, `_unique_id`, saving,
        # SavedModel tracing) then sees the master.
        return self._master

    # -- reads -------------------------------------------------------------------------------

    def _local_replica_id(self):
        """The id of the replica of this variable's strategy running now, else None.

        Stricter than TF's `get_current_replica_id_as_int`, which reports replica 0 of the
        default strategy outside any scope, and a device-name string inside a parameter-server
        `extended.update`: both must read the master here.
        """
        if values_util.is_saving_non_distributed():
            return None
        replica_context = distribute_lib.get_replica_context()
        if replica_context is not None:
            if replica_context.strategy is not self._distribute_strategy:
                return None
            return tensor_util.constant_value(replica_context.replica_id_in_sync_group)
        replica_id = distribute_lib.get_update_replica_id()
        return replica_id if isinstance(replica_id, int) else None

    def _get(self):
        replica_id = self._local_replica_id()
        return self._master if replica_id is None else self._get_replica(replica_id)

    def _get_on_device_or_primary(self):
        return self._get()

    def _get_cross_replica(self):
        return array_ops.identity(self._master)

    @property
    def handle(self):
        return self._get().handle

    # -- writes ------------------------------------------------------------------------------

    def _update_replica(self, update_fn, value, **kwargs):
        if self._aggregation != _NONE:
            return super()._update_replica(update_fn, value, **kwargs)
        # NONE means "every replica writes the same value" (MirroredStrategy's assumption):
        # replica 0's value is written once, to the master, then to the copies.
        if getattr(ops.get_default_graph(), "is_control_flow_graph", False):
            return self._write_from_first_replica(update_fn, value, **kwargs)

        def merge_fn(strategy, value, **kwargs):
            value = values_util.apply_aggregation(strategy, value, _ONLY_FIRST_REPLICA, self)
            return self._update_cross_replica(update_fn, value, **kwargs)

        replica_context = distribute_lib.get_replica_context()
        return replica_context.merge_call(merge_fn, args=(value,), kwargs=kwargs)

    def _write_from_first_replica(self, update_fn, value, **kwargs):
        """Writes without `merge_call`: replica 0 writes the master and refreshes the copies."""
        read_value = kwargs.get("read_value", True)

        def write():
            with ops.device(self._master.device):
                written = update_fn(self._master, value, **kwargs)
            with ops.control_dependencies(ops_of(written)):
                refreshed = self.refresh_copies()
            with ops.control_dependencies(ops_of(refreshed)):
                return self._get().read_value() if read_value else None

        return write_from_first_replica(
            self._local_replica_id(), write, lambda: self._get().read_value(), read_value
        )

    def refresh_copies(self):
        """Copies the master to every working copy: host -> first copy, then copy -> copy.

        Each read waits for the write before it (explicitly: TF1 graphs order nothing on their
        own). Returns the assign ops (empty when every copy is the master).
        """
        source, source_written = self._master, []
        updates = []
        for copy in self._values:
            if copy is self._master:
                continue
            with ops.device(source.device), ops.control_dependencies(source_written):
                value = source.read_value()
            with ops.device(copy.device):
                updates.append(copy.assign(value, read_value=False))
            if source is self._master:
                # The relay: the host sends the new value once.
                source, source_written = copy, ops_of(updates[-1])
        return updates

    # -- saving: one plain value, the master -------------------------------------------------

    def _gather_saveables_for_checkpoint(self):
        return trackable.Trackable._gather_saveables_for_checkpoint(self)

    def _serialize_to_tensors(self):
        return self._master._serialize_to_tensors()  # pylint: disable=protected-access

    def _restore_from_tensors(self, restored_tensors):
        restored = self._master._restore_from_tensors(restored_tensors)  # pylint: disable=protected-access
        if context.executing_eagerly():
            self.refresh_copies()
            return restored
        with ops.control_dependencies(ops_of(restored)):
            return control_flow_ops.group(ops_of(self.refresh_copies()))

    def _copy_trackable_to_cpu(self, object_map):
        self._master._copy_trackable_to_cpu(object_map)  # pylint: disable=protected-access
        object_map[self] = object_map[self._master]


def create_mirrored_weight(strategy, devices, parameter_device, next_creator, **kwargs):
    """Creates the master on `parameter_device` and a working copy on each of `devices`."""
    aggregation = kwargs.pop("aggregation", _NONE)
    kwargs.pop("collections", None)  # TF1 graph collections: not used by TF2 code.
    with ops.device(parameter_device):
        master = next_creator(**kwargs)
    copies = []
    name = master.name.split(":")[0]
    for replica_id, device in enumerate(devices):
        if _same_device(device, master.device):
            copies.append(master)
            continue
        copy_kwargs = dict(
            kwargs,
            initial_value=lambda: initial_value_of(master),
            # A trailing "/" makes the name absolute, outside the current name scope.
            name=f"{name}/replica_{replica_id}/",
        )
        with ops.device(device), context.device_policy(context.DEVICE_PLACEMENT_SILENT):
            copies.append(next_creator(**copy_kwargs))
    weight = MirroredWeight(strategy, master, copies, aggregation)
    if _in_tf1_graph():
        # MirroredVariable's initializer groups its copies' only; tf_keras' TF1 training loop
        # runs it when the master (what `is_variable_initialized` reads) is uninitialized.
        weight._initializer_op = control_flow_ops.group(
            master.initializer, *(copy.initializer for copy in copies if copy is not master)
        )
    return weight


def ops_of(result):
    """The ops and tensors in an update's result, to order what follows after it.

    Eager updates return none (and `tf.function` orders the writes of one variable itself); in
    a TF1 graph an assign returns the variable it wrote, whose `op` is the write.
    """
    found = []
    for item in nest.flatten(result):
        if isinstance(item, (ops.Operation, tensor_lib.Tensor)):
            found.append(item)
        elif _in_tf1_graph() and resource_variable_ops.is_resource_variable(item):
            found.append(item.op)
    return found


def after(refreshed, result, variable):
    """An update's `result`, ordered after the copies were `refreshed`.

    The master in a result stands for the whole `variable`, as MirroredStrategy returns its
    `MirroredVariable` from an assign.
    """
    refreshed = ops_of(refreshed)

    def after_one(item):
        if item is variable.master:
            return variable
        if refreshed and isinstance(item, tensor_lib.Tensor):
            with ops.control_dependencies(refreshed):
                return array_ops.identity(item)
        if refreshed and isinstance(item, ops.Operation):
            return control_flow_ops.group(item, *refreshed)
        if refreshed and _in_tf1_graph() and resource_variable_ops.is_resource_variable(item):
            # A TF1 session runs only what is fetched: as MirroredStrategy does for a written
            # variable, return an op that also waits for the copies.
            return control_flow_ops.group(item.op, *refreshed)
        return item

    return nest.map_structure(after_one, result)


def _in_tf1_graph():
    return not context.executing_eagerly() and not ops.inside_function()


def _same_device(device, other):
    return device_util.canonicalize(device) == device_util.canonicalize(other)
