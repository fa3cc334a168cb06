"""`ReplicaExtended`: the tf.distribute hooks behind `ReplicaStrategy`.

Built on TensorFlow's `ParameterServerStrategyExtended` in its local mode (variables on one
parameter device, one replica per compute device, `mirrored_run` for replica threads, TF's own
input pipeline), with the defects that make stock CentralStorageStrategy unusable with Keras 3
fixed here:
- ON_READ variables (metrics) get one copy per replica instead of one SUM-aggregated variable,
  which Keras 3's `assign(self + value)` over-counted;
- writes with aggregation NONE from replica context apply once instead of raising
  (`_variables.ParameterVariable`);
- `reduce` walks nested structures, and tolerates the uneven first batch Keras reduces to
  build models;
- the last partial batch of a dataset is kept (`get_next_as_optional`), and `InputOptions`,
  including `PER_REPLICA` replication, are honoured.
"""

from __future__ import annotations

from absl import logging
from tensorflow.python.distribute import (
    cross_device_ops as cross_device_ops_lib,
)
from tensorflow.python.distribute import (
    device_util,
    distribute_lib,
    distribute_utils,
    input_lib,
    input_util,
    mirrored_run,
    numpy_dataset,
    parameter_server_strategy,
    values,
)
from tensorflow.python.framework import indexed_slices, ops, tensor_util
from tensorflow.python.ops import array_ops, cond, math_ops, variable_scope
from tensorflow.python.util import nest

from replica_strategy import _device_all_reduce, _mirrored_weights, _variables, batching

_ON_READ = variable_scope.VariableSynchronization.ON_READ
_ON_WRITE = (
    None,
    variable_scope.VariableSynchronization.AUTO,
    variable_scope.VariableSynchronization.ON_WRITE,
)
_VALID_AGGREGATIONS = (
    variable_scope.VariableAggregation.NONE,
    variable_scope.VariableAggregation.SUM,
    variable_scope.VariableAggregation.MEAN,
    variable_scope.VariableAggregation.ONLY_FIRST_REPLICA,
)


class ReplicaExtended(parameter_server_strategy.ParameterServerStrategyExtended):
    """Variables once on the parameter device, one replica per device, merges on one device."""

    def __init__(
        self, container_strategy, devices, parameter_device, merge_device, mirror_weights=False
    ):
        super().__init__(
            container_strategy,
            compute_devices=list(devices),
            parameter_device=parameter_device,
        )
        self._merge_device = merge_device
        self._cross_device_ops = cross_device_ops_lib.ReductionToOneDevice(
            reduce_to_device=merge_device
        )
        # With mirror_weights, all-reduces run among the replica devices (`_cross_device_ops_to`).
        self._mirror_weights = mirror_weights
        self._replica_devices = {device_util.canonicalize(device) for device in devices}
        self._replica_all_reduce = (
            _device_all_reduce.choose(devices, _device_all_reduce.nccl_available())
            if mirror_weights
            else None
        )
        # Keeps the last partial batch of a dataset instead of dropping it. One replica takes
        # any batch whole, and skips the optional-element checks on every step.
        self.experimental_enable_get_next_as_optional = len(devices) > 1
        # Rows each replica holds in the `run` under way (None: the step has no batched input).
        self._rows_per_replica = None

    # -- replicas ------------------------------------------------------------------------------

    def _call_for_each_replica(self, fn, args, kwargs):
        outer_rows = self._rows_per_replica
        if self._num_replicas_in_sync > 1:  # One replica takes the whole batch: nothing to mask.
            self._rows_per_replica = _rows_per_replica((args, kwargs), self._num_replicas_in_sync)
        try:
            return mirrored_run.call_for_each_replica(self._container_strategy(), fn, args, kwargs)
        finally:
            self._rows_per_replica = outer_rows

    # -- variables -----------------------------------------------------------------------------

    def _create_variable(self, next_creator, **kwargs):
        colocate_with = kwargs.pop("colocate_with", None)
        if isinstance(colocate_with, numpy_dataset.SingleDevice):
            with ops.device(colocate_with.device):
                return next_creator(**kwargs)
        if isinstance(colocate_with, _mirrored_weights.MirroredWeight):
            colocate_with = colocate_with.master  # Optimizer slots: once, beside the master.
        elif isinstance(colocate_with, values.DistributedVariable):
            # A slot of a per-replica variable (rare): one copy per replica, like its primary.
            kwargs["synchronization"] = colocate_with.synchronization
            colocate_with = None
        if self._num_replicas_in_sync > 1 and kwargs.get("synchronization") == _ON_READ:
            return _variables.create_replica_local_variable(
                self._container_strategy(), self._compute_devices, next_creator, **kwargs
            )
        if colocate_with is not None:
            with ops.device(None), ops.colocate_with(colocate_with):
                return self._create_parameter_variable(next_creator, **kwargs)
        if self._mirror_weights and _is_trainable_on_write(kwargs):
            aggregation = _valid_aggregation(kwargs)
            with ops.colocate_with(None, ignore_existing=True):
                return _mirrored_weights.create_mirrored_weight(
                    self._container_strategy(),
                    self._compute_devices,
                    self._variable_device,
                    next_creator,
                    aggregation=aggregation,
                    **kwargs,
                )
        with ops.colocate_with(None, ignore_existing=True), ops.device(self._variable_device):
            return self._create_parameter_variable(next_creator, **kwargs)

    def _create_parameter_variable(self, next_creator, **kwargs):
        if self._num_replicas_in_sync == 1:
            return next_creator(**kwargs)
        aggregation = _valid_aggregation(kwargs)
        return _variables.create_parameter_variable(
            self._container_strategy(), next_creator, aggregation, **kwargs
        )

    def _update(self, var, fn, args, kwargs, group):
        if isinstance(var, _mirrored_weights.MirroredWeight):
            return self._update_mirrored_weight(var, fn, args, kwargs, group)
        if not isinstance(var, values.DistributedVariable):
            return super()._update(var, fn, args, kwargs, group)
        # Per-replica (ON_READ) variables: the same update on every copy.
        updates = []
        for replica_id, copy in enumerate(var.values):
            with ops.device(copy.device), distribute_lib.UpdateContext(replica_id):
                updates.append(
                    fn(
                        copy,
                        *distribute_utils.select_replica(replica_id, args),
                        **distribute_utils.select_replica(replica_id, kwargs),
                    )
                )
        return distribute_utils.update_regroup(self, updates, group)

    def _update_mirrored_weight(self, var, fn, args, kwargs, group):
        """Runs `fn` once, on the master, then refreshes the working copies from it."""
        result = super()._update(var.master, fn, args, kwargs, group=True)
        with ops.control_dependencies(_mirrored_weights.ops_of(result)):
            refreshed = var.refresh_copies()
        result = _mirrored_weights.after(refreshed, result, var)
        return result if group else nest.map_structure(self._local_results, result)

    def read_var(self, var):
        if isinstance(var, _mirrored_weights.MirroredWeight):
            return array_ops.identity(var.master)
        if isinstance(var, values.SyncOnReadVariable):
            return var._get_cross_replica()  # pylint: disable=protected-access
        return array_ops.identity(var)

    def value_container(self, val):
        container = super().value_container(val)
        if container is not val:
            return container
        return distribute_utils.value_container(val)

    # -- reductions ----------------------------------------------------------------------------

    def _reduce_to(self, reduce_op, value, destinations, options):
        value = self._without_empty_replicas(value)
        return self._reduce_present_rows(reduce_op, value, destinations, options)

    def _batch_reduce_to(self, reduce_op, value_destination_pairs, options):
        # Masks every value in one pass: one branch per replica, whatever the number of values.
        values_to_reduce = self._without_empty_replicas(
            [value for value, _ in value_destination_pairs]
        )
        return [
            self._reduce_present_rows(reduce_op, value, destinations, options)
            for value, (_, destinations) in zip(
                values_to_reduce, value_destination_pairs, strict=True
            )
        ]

    def _reduce_present_rows(self, reduce_op, value, destinations, options):
        def reduce_one(leaf):
            if not isinstance(leaf, values.DistributedValues):
                return cross_device_ops_lib.reduce_non_distributed_value(
                    reduce_op, leaf, destinations, self._num_replicas_in_sync
                )
            if not isinstance(destinations, values.DistributedValues):
                leaf = _without_uneven_rows(leaf, reduce_op)
            return self._cross_device_ops_to(destinations).reduce(
                reduce_op, leaf, destinations=destinations, options=options
            )

        return nest.map_structure(reduce_one, value)

    def _cross_device_ops_to(self, destinations):
        """Where a reduction runs.

        With mirror_weights, a reduction whose result is wanted on exactly the replica devices
        (an all-reduce: Keras' gradient sum, any `ReplicaContext.all_reduce`, a SUM or MEAN
        write to a working copy) runs among the replica devices; the update then takes ONE
        copy of the sum to the parameter device. Every other reduction runs on the merge device.
        """
        if self._replica_all_reduce is not None and self._are_replica_devices(destinations):
            return self._replica_all_reduce
        return self._cross_device_ops

    def _are_replica_devices(self, destinations):
        if not cross_device_ops_lib.check_destinations(destinations):
            return False
        wanted = cross_device_ops_lib.get_devices_from(destinations)
        return {device_util.canonicalize(device) for device in wanted} == self._replica_devices

    def replica_row_fraction(self):
        """This replica's share of the global batch, n_r / B, inside `strategy.run`.

        Read from the step's first batched input. Outside `run`, or when the step has no
        batched input, every replica counts the same: 1 / num_replicas_in_sync.
        """
        rows = self._rows_per_replica
        replica_context = distribute_lib.get_replica_context()
        if (
            rows is None
            or replica_context is None
            or replica_context.strategy is not self._container_strategy()
        ):
            return 1.0 / self._num_replicas_in_sync
        replica_id = tensor_util.constant_value(replica_context.replica_id_in_sync_group)
        if all(isinstance(count, int) for count in rows):
            return rows[replica_id] / max(sum(rows), 1)
        counts = [math_ops.cast(count, "float32") for count in rows]
        return math_ops.div_no_nan(counts[replica_id], math_ops.add_n(counts))

    def _without_empty_replicas(self, value):
        """Replaces what replicas with no rows computed by zeros, so they add nothing.

        A replica given zero rows of an uneven batch still runs, and some layers give it NaN
        gradients (BatchNormalization's mean over no rows); summing those would poison the
        weights. Applies inside `run` (merge_call, all_reduce), when the step's input showed
        an empty replica or its row counts are only known at run time.
        """
        rows = self._rows_per_replica
        if rows is None or all(isinstance(count, int) and count > 0 for count in rows):
            return value
        leaves = nest.flatten(value)
        replica_leaves = [
            index
            for index, leaf in enumerate(leaves)
            if isinstance(leaf, values.PerReplica) and len(leaf.values) == len(rows)
        ]
        if not replica_leaves:
            return value
        masked = [
            [leaves[index].values[replica] for index in replica_leaves]
            for replica in range(len(rows))
        ]
        for replica, replica_rows in enumerate(rows):
            masked[replica] = _zeros_unless(replica_rows, masked[replica])
        for position, index in enumerate(replica_leaves):
            leaves[index] = values.PerReplica(
                tuple(masked[replica][position] for replica in range(len(rows)))
            )
        return nest.pack_sequence_as(value, leaves)

    def _gather_to_implementation(self, value, destinations, axis, options):
        def gather_one(leaf):
            if not isinstance(leaf, values.DistributedValues):
                return leaf
            batching.require_batch_axis(leaf.values)
            return self._cross_device_ops._gather(  # pylint: disable=protected-access
                leaf, destinations=destinations, axis=axis, options=options
            )

        return nest.map_structure(gather_one, value)

    # -- input ---------------------------------------------------------------------------------

    def _input_workers_with_options(self, options=None):
        host = self._worker_device
        if options and options.experimental_replication_mode == (
            distribute_lib.InputReplicationMode.PER_REPLICA
        ):
            return input_lib.InputWorkers(
                tuple(
                    (device if options.experimental_place_dataset_on_device else host, (device,))
                    for device in self._compute_devices
                )
            )
        if options and not options.experimental_fetch_to_device:
            return input_lib.InputWorkers([(host, (host,) * len(self._compute_devices))])
        return input_lib.InputWorkers([(host, tuple(self._compute_devices))])

    def _experimental_distribute_dataset(self, dataset, options):
        if options and options.experimental_replication_mode == (
            distribute_lib.InputReplicationMode.PER_REPLICA
        ):
            raise NotImplementedError(
                "InputReplicationMode.PER_REPLICA is only supported in "
                "`distribute_datasets_from_function`, as in every tf.distribute strategy."
            )
        return super()._experimental_distribute_dataset(dataset, options)

    def _distribute_datasets_from_function(self, dataset_fn, options):
        input_workers = self._input_workers_with_options(options)
        input_contexts = [
            distribute_lib.InputContext(
                num_input_pipelines=input_workers.num_workers,
                input_pipeline_id=pipeline_id,
                num_replicas_in_sync=self._num_replicas_in_sync,
            )
            for pipeline_id in range(input_workers.num_workers)
        ]
        return input_util.get_distributed_datasets_from_function(
            dataset_fn, input_workers, input_contexts, self._container_strategy(), options
        )

    # -- facts ---------------------------------------------------------------------------------

    @property
    def merge_device(self):
        return self._merge_device

    @property
    def mirror_weights(self):
        return self._mirror_weights

    @property
    def experimental_between_graph(self):
        return False


def _is_trainable_on_write(kwargs):
    synchronization = kwargs.get("synchronization")
    trainable = kwargs.get("trainable")
    return synchronization in _ON_WRITE and trainable is not False


def _valid_aggregation(kwargs):
    """Pops `aggregation` from a variable creator's `kwargs`, checked."""
    aggregation = kwargs.pop("aggregation", variable_scope.VariableAggregation.NONE)
    if aggregation not in _VALID_AGGREGATIONS:
        raise ValueError(
            f"Invalid variable aggregation {aggregation!r} for variable "
            f"{kwargs.get('name')!r}; expected one of {list(_VALID_AGGREGATIONS)}."
        )
    return aggregation


def _rows_per_replica(structure, num_replicas):
    """Each replica's row count in the first batched per-replica input of `structure`.

    Returns None when no input is batched; else a list of ints (static shapes) or of int64
    scalar tensors (row counts known only at run time).
    """
    for leaf in nest.flatten(structure):
        if not isinstance(leaf, values.PerReplica) or len(leaf.values) != num_replicas:
            continue
        parts = [part for part in leaf.values if tensor_util.is_tf_type(part)]
        if len(parts) != num_replicas or any(part.shape.rank in (None, 0) for part in parts):
            continue
        static_rows = [part.shape[0] for part in parts]
        if all(rows is not None for rows in static_rows):
            return static_rows
        rows = []
        for part in parts:
            with ops.device(part.device):
                rows.append(array_ops.shape(part, out_type="int64")[0])
        return rows
    return None


def _zeros_unless(rows, tensors):
    """`tensors` when `rows` > 0, else zeros of the same shapes (rows static or dynamic)."""
    if isinstance(rows, int):
        return tensors if rows > 0 else [_zeros_like(tensor) for tensor in tensors]
    dense = [
        tensor
        for tensor in tensors
        if tensor_util.is_tf_type(tensor) and not isinstance(tensor, indexed_slices.IndexedSlices)
    ]
    if len(dense) != len(tensors):
        return tensors
    with ops.device(tensors[0].device):
        return cond.cond(
            math_ops.greater(rows, 0),
            lambda: [array_ops.identity(tensor) for tensor in tensors],
            lambda: [array_ops.zeros_like(tensor) for tensor in tensors],
        )


def _zeros_like(tensor):
    if isinstance(tensor, indexed_slices.IndexedSlices):
        return indexed_slices.IndexedSlices(
            array_ops.zeros_like(tensor.values), tensor.indices, tensor.dense_shape
        )
    return array_ops.zeros_like(tensor)


def _without_uneven_rows(per_replica, reduce_op):
    """Makes per-replica values of an uneven split reducible element by element.

    Reducing across replicas (axis=None) needs equal shapes. When an uneven split left replicas
    with different row counts (as in the first batch Keras reduces to build a model), empty
    replicas are left out and the others are cut to the rows they all have. Only eager values
    with concrete shapes are touched; a logged warning says so.
    """
    parts = per_replica.values
    shapes = [part.shape for part in parts]
    if (
        not isinstance(per_replica, values.PerReplica)
        or len({tuple(shape) for shape in shapes}) == 1
        or any(shape.rank in (None, 0) or not shape.is_fully_defined() for shape in shapes)
        or len({tuple(shape[1:]) for shape in shapes}) != 1
    ):
        return per_replica
    non_empty = [part for part in parts if part.shape[0] > 0] or parts[:1]
    rows = min(part.shape[0] for part in non_empty)
    logging.log_first_n(
        logging.WARNING,
        "%s across replicas of values with different batch sizes %s: reducing the first %d "
        "rows of each non-empty replica. Use axis=0 or strategy.gather for the whole batch.",
        1,
        reduce_op.value,
        [shape[0] for shape in shapes],
        rows,
    )
    trimmed = []
    for part in non_empty:
        with ops.device(part.device):
            trimmed.append(part[:rows])
    return values.PerReplica(tuple(trimmed))
