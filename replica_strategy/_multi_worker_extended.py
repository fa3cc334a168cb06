"""`MultiWorkerReplicaExtended`: `ReplicaExtended` on each worker, hosts summing across workers.

Within a worker everything is `ReplicaExtended`'s. Between workers, every cross-replica
reduction (gradients, row counts, metrics, `ReplicaContext.all_reduce`) is first summed on this
worker's host CPU by `ReplicaExtended`, then all-reduced among the hosts with TensorFlow's
`CollectiveAllReduce` over one device per worker (MultiWorkerMirroredStrategy's
`_host_cross_device_ops`), then divided for MEAN by the global replica count and copied to
where it is wanted. Initial values are broadcast from the chief (collective broadcast, as
MultiWorkerMirroredStrategy does), so workers with different seeds start equal.
"""

from __future__ import annotations

import itertools

from tensorflow.python.distribute import (
    collective_util,
    cross_device_utils,
    distribute_lib,
    input_util,
    reduce_util,
    values,
)
from tensorflow.python.distribute import cross_device_ops as cross_device_ops_lib
from tensorflow.python.framework import indexed_slices, ops
from tensorflow.python.ops import array_ops, collective_ops, math_ops, variable_scope
from tensorflow.python.trackable import base as trackable_base
from tensorflow.python.util import nest

from replica_strategy._extended import ReplicaExtended

_ON_READ = variable_scope.VariableSynchronization.ON_READ
# Group keys of this strategy's collectives start far above the 1 every TF strategy starts from
# (tensorflow/tensorflow#61314), one range per strategy made in the process.
_GROUP_KEY_BASE = 1_000_000
_GROUP_KEY_RANGE = 10_000
_strategy_serial = itertools.count()


class MultiWorkerReplicaExtended(ReplicaExtended):
    def __init__(
        self,
        container_strategy,
        group,
        devices,
        parameter_device,
        merge_device,
        mirror_weights,
        split,
        communication_options,
    ):
        super().__init__(
            container_strategy, devices, parameter_device, merge_device, mirror_weights, split
        )
        self._group = group
        self._communication_options = communication_options
        self._variables_created = 0
        if group is None:
            return
        serial = next(_strategy_serial)
        self._serial = serial
        self._default_device = group.task_prefix
        self.experimental_enable_get_next_as_optional = True
        self._collective_keys = cross_device_utils.CollectiveKeys(
            group_key_start=_GROUP_KEY_BASE + serial * _GROUP_KEY_RANGE
        )
        self._host_all_reduce = cross_device_ops_lib.CollectiveAllReduce(
            devices=[group.host_device],
            group_size=group.num_workers,
            options=communication_options,
            collective_keys=self._collective_keys,
        )
        group.agree(
            "the strategy's settings",
            f"strategy{serial}/settings",
            {
                "number of local devices": len(devices),
                "mirror_weights": mirror_weights,
                "split": split if isinstance(split, str) else list(split),
            },
        )

    # -- facts ---------------------------------------------------------------------------------

    @property
    def num_workers(self) -> int:
        return 1 if self._group is None else self._group.num_workers

    @property
    def worker_index(self) -> int:
        return 0 if self._group is None else self._group.worker_index

    @property
    def global_replica_count(self) -> int:
        return self._num_replicas_in_sync * self.num_workers

    def _in_multi_worker_mode(self):
        return self.num_workers > 1

    @property
    def experimental_between_graph(self):
        return self.num_workers > 1

    @property
    def should_checkpoint(self):
        return self.worker_index == 0

    @property
    def should_save_summary(self):
        return self.worker_index == 0

    # -- reductions ----------------------------------------------------------------------------

    def _reduce_to(self, reduce_op, value, destinations, options):
        if self._group is None:
            return super()._reduce_to(reduce_op, value, destinations, options)
        leaves = nest.flatten(value)
        distributed = [isinstance(leaf, values.DistributedValues) for leaf in leaves]
        # A tensor outside any replica is this worker's value, reduced over the workers as
        # under MultiWorkerMirroredStrategy (TF's input pipeline counts workers with data so).
        replica_sums = iter(
            self._across_workers(
                reduce_op,
                [leaf for leaf, is_distributed in zip(leaves, distributed) if is_distributed],
                [destinations] * sum(distributed),
                options,
            )
        )
        worker_sums = iter(
            self._across_workers(
                reduce_op,
                [leaf for leaf, is_distributed in zip(leaves, distributed) if not is_distributed],
                [destinations] * (len(leaves) - sum(distributed)),
                options,
                worker_values=True,
            )
        )
        return nest.pack_sequence_as(
            value,
            [
                next(replica_sums if is_distributed else worker_sums)
                for is_distributed in distributed
            ],
        )

    def _batch_reduce_to(self, reduce_op, value_destination_pairs, options):
        if self._group is None:
            return super()._batch_reduce_to(reduce_op, value_destination_pairs, options)
        # Every per-replica leaf of every pair in one collective batch (Keras: every gradient).
        # A value all replicas share arrives as itself and is reduced as ReplicaStrategy does.
        leaves, destinations = [], []
        for value, value_destinations in value_destination_pairs:
            for leaf in nest.flatten(value):
                if isinstance(leaf, values.DistributedValues):
                    leaves.append(leaf)
                    destinations.append(value_destinations)
        reduced = iter(self._across_workers(reduce_op, leaves, destinations, options))
        results = []
        for value, value_destinations in value_destination_pairs:
            results.append(
                nest.pack_sequence_as(
                    value,
                    [
                        next(reduced)
                        if isinstance(leaf, values.DistributedValues)
                        else super(MultiWorkerReplicaExtended, self)._batch_reduce_to(
                            reduce_op, [(leaf, value_destinations)], options
                        )[0]
                        for leaf in nest.flatten(value)
                    ],
                )
            )
        return results

    def _across_workers(self, reduce_op, leaves, destinations, options, worker_values=False):
        """Sums `leaves` on this host, then across hosts, in one collective batch.

        MEAN divides by every worker's replicas, or with `worker_values` (each leaf one value
        of this worker) by the number of workers. Each result goes to its `destinations`.
        """
        if not leaves:
            return []
        host = self._group.host_device
        if worker_values:
            with ops.device(host):
                local_sums = [array_ops.identity(leaf) for leaf in leaves]
        else:
            local_sums = super()._batch_reduce_to(
                reduce_util.ReduceOp.SUM, [(leaf, host) for leaf in leaves], options
            )
        count = self.num_workers if worker_values else self.global_replica_count
        options = self._communication_options.merge(options or collective_util.Options())
        global_sums = self._host_all_reduce.batch_reduce(
            reduce_util.ReduceOp.SUM,
            [(values.PerReplica((_on_host(local_sum),)), host) for local_sum in local_sums],
            options=options,
        )
        results = []
        for global_sum, wanted in zip(global_sums, destinations, strict=True):
            tensor = _on_host(global_sum)
            if reduce_op == reduce_util.ReduceOp.MEAN:
                with ops.device(host):
                    tensor = _divide(tensor, count)
            results.append(cross_device_ops_lib.simple_broadcast(tensor, wanted))
        return results

    def _gather_to_implementation(self, value, destinations, axis, options):
        if self._group is None:
            return super()._gather_to_implementation(value, destinations, axis, options)
        host = self._group.host_device
        local = super()._gather_to_implementation(value, host, axis, options)
        options = self._communication_options.merge(options or collective_util.Options())

        def across(original, gathered):
            # A tensor outside any replica is this worker's value, gathered as under
            # MultiWorkerMirroredStrategy (Keras gathers each worker's row counts so).
            with ops.device(host):
                gathered = array_ops.identity(_on_host(gathered))
            return self._host_all_reduce._gather(  # pylint: disable=protected-access
                values.PerReplica((gathered,)),
                destinations=destinations,
                axis=axis,
                options=options,
            )

        return nest.map_structure(across, value, local)

    def replica_row_fraction(self):
        """This replica's rows over every worker's rows of the step (n_r / B, B global)."""
        if self._group is None:
            return super().replica_row_fraction()
        replica_rows = self.replica_rows()
        if replica_rows is None:
            return 1.0 / self.global_replica_count
        mine = math_ops.cast(replica_rows[0], "float32")
        everyone = distribute_lib.get_replica_context().all_reduce(reduce_util.ReduceOp.SUM, mine)
        return math_ops.div_no_nan(mine, everyone)

    # -- variables -----------------------------------------------------------------------------

    def _create_variable(self, next_creator, **kwargs):
        if (
            self._group is not None
            and kwargs.get("synchronization") != _ON_READ
            and not _is_input_data(kwargs.get("colocate_with"))
        ):
            kwargs["initial_value"] = self._from_chief(kwargs)
        return super()._create_variable(next_creator, **kwargs)

    def _from_chief(self, kwargs):
        """The variable's initial value, as the chief computed it (collective broadcast)."""
        index = self._variables_created
        self._variables_created += 1
        initial_value = kwargs["initial_value"]
        dtype = kwargs.get("dtype")
        name = kwargs.get("name")
        group = self._group
        host = group.host_device
        received = []  # Once per variable, however many copies its creators make.

        def broadcast_initial_value():
            if received:
                return array_ops.identity(received[0])
            with ops.init_scope():
                value = initial_value() if callable(initial_value) else initial_value
                if isinstance(value, trackable_base.CheckpointInitialValue):
                    value = value.wrapped_value
                value = ops.convert_to_tensor(value, dtype=dtype)
                group.agree(
                    f"variable #{index}",
                    f"strategy{self._serial}/variable{index}",
                    {"name": str(name), "shape": value.shape.as_list(), "dtype": value.dtype.name},
                )
                group_key = self._collective_keys.get_group_key([host])
                instance_key = self._collective_keys.get_instance_key(group_key, host)
                with ops.device(host):
                    if group.is_chief:
                        sent = collective_ops.broadcast_send(
                            value,
                            value.shape,
                            value.dtype,
                            group.num_workers,
                            group_key,
                            instance_key,
                        )
                        with ops.control_dependencies([sent]):
                            value = array_ops.identity(value)
                    else:
                        value = collective_ops.broadcast_recv(
                            value.shape, value.dtype, group.num_workers, group_key, instance_key
                        )
            received.append(value)
            return value

        return broadcast_initial_value

    # -- input ---------------------------------------------------------------------------------

    def _input_context(self):
        return distribute_lib.InputContext(
            num_input_pipelines=self.num_workers,
            input_pipeline_id=self.worker_index,
            num_replicas_in_sync=self.global_replica_count,
        )

    def _experimental_distribute_dataset(self, dataset, options):
        if self._group is None:
            return super()._experimental_distribute_dataset(dataset, options)
        self._require_even_split()
        if options and options.experimental_replication_mode == (
            distribute_lib.InputReplicationMode.PER_REPLICA
        ):
            return super()._experimental_distribute_dataset(dataset, options)  # It raises.
        # Each worker takes its part of every global batch (auto-sharding, as
        # MultiWorkerMirroredStrategy), then splits it among its replicas.
        return input_util.get_distributed_dataset(
            dataset,
            self._input_workers_with_options(options),
            self._container_strategy(),
            num_replicas_in_sync=self.global_replica_count,
            input_context=self._input_context(),
            options=options,
        )

    def _distribute_datasets_from_function(self, dataset_fn, options):
        if self._group is None:
            return super()._distribute_datasets_from_function(dataset_fn, options)
        self._require_even_split()
        return input_util.get_distributed_datasets_from_function(
            dataset_fn,
            self._input_workers_with_options(options),
            [self._input_context()],
            self._container_strategy(),
            options=options,
        )

    def _require_even_split(self):
        if self._split.resplits:
            raise NotImplementedError(
                "MultiWorkerReplicaStrategy distributes datasets across several workers with "
                "split='even' only, for now; build each worker's strategy with split='even'."
            )


def _on_host(value):
    """The one tensor a host-level value holds."""
    if isinstance(value, values.DistributedValues):
        (value,) = value.values
    return value


def _divide(value, count):
    if isinstance(value, indexed_slices.IndexedSlices):
        return indexed_slices.IndexedSlices(
            _divide(value.values, count), value.indices, value.dense_shape
        )
    if value.dtype.is_integer:
        return math_ops.floordiv(value, count)
    return value / math_ops.cast(count, value.dtype)


def _is_input_data(colocate_with):
    # Variables that hold a worker's own input (`numpy_dataset.SingleDevice`) stay its own.
    return type(colocate_with).__name__ == "SingleDevice"
