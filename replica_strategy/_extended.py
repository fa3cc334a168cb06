"""`ReplicaExtended`: the tf.distribute hooks behind `ReplicaStrategy`.

Built on TensorFlow's `ParameterServerStrategyExtended` in its local mode (variables on one
parameter device, one replica per compute device, `mirrored_run` for replica threads, TF's own
input pipeline), with the defects that make stock CentralStorageStrategy unusable with Keras 3
fixed here:
- ON_READ variables (metrics) get one copy per replica instead of one SUM-aggregated variable,
  which Keras 3's `assign(self + value)` over-counted;
- writes with aggregation NONE from replica context apply once instead of raising
  (`_variables.ParameterVariable`);
- `reduce` walks nested structures, and rejects per-replica values of different shapes with an
  error saying how to reduce them (`ReplicaStrategy.reduce` lets Keras build on any first batch);
- the last partial batch of a dataset is kept (`get_next_as_optional`), and `InputOptions`,
  including `PER_REPLICA` replication, are honoured.

With `mirror_weights`, trainable variables are `_mirrored_weights.MirroredWeight`s (master on
the parameter device, working copies on the replicas): `_create_variable` makes them, `_update`
writes the master and refreshes the copies, `_cross_device_ops_to` keeps all-reduces among the
replica devices.
"""

from __future__ import annotations

import contextlib
import weakref

from tensorflow.python.autograph.core import ag_ctx as autograph_ctx
from tensorflow.python.autograph.impl import api as autograph
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
from tensorflow.python.eager import context, def_function
from tensorflow.python.framework import ops, tensor_shape, tensor_util
from tensorflow.python.ops import array_ops, math_ops, variable_scope
from tensorflow.python.platform import tf_logging
from tensorflow.python.util import nest

from replica_strategy import (
    _device_all_reduce,
    _empty_replicas,
    _log_filter,
    _mirrored_weights,
    _split_input,
    _split_state,
    _step,
    _variables,
    batching,
)

_AUTO = variable_scope.VariableSynchronization.AUTO
_ON_READ = variable_scope.VariableSynchronization.ON_READ
_ON_WRITE = variable_scope.VariableSynchronization.ON_WRITE
_VALID_AGGREGATIONS = (
    variable_scope.VariableAggregation.NONE,
    variable_scope.VariableAggregation.SUM,
    variable_scope.VariableAggregation.MEAN,
    variable_scope.VariableAggregation.ONLY_FIRST_REPLICA,
)


class ReplicaExtended(parameter_server_strategy.ParameterServerStrategyExtended):
    """Variables once on the parameter device, one replica per device, merges on one device."""

    def __init__(
        self,
        container_strategy,
        devices,
        parameter_device,
        merge_device,
        mirror_weights=False,
        split="even",
    ):
        # TF's parent logs "ParameterServerStrategy (CentralStorageStrategy if you are using a
        # single machine)" here; a user who asked for ReplicaStrategy reads our line instead.
        with _log_filter.without_records_containing("CentralStorageStrategy"):
            super().__init__(
                container_strategy,
                compute_devices=list(devices),
                parameter_device=parameter_device,
            )
        tf_logging.info(
            "ReplicaStrategy with replicas on %s, variables on %s, merges on %s%s",
            list(devices),
            parameter_device,
            merge_device,
            ", working copies of the weights on the replicas" if mirror_weights else "",
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
        self._traced_around_replicas = weakref.WeakKeyDictionary()
        # How each batch is shared among the replicas (`split`); see _split_state.py.
        self._split = _split_state.SplitState(split, devices, self._worker_device)

    # -- replicas ------------------------------------------------------------------------------

    def _call_for_each_replica(self, fn, args, kwargs):
        strategy = self._container_strategy()
        if self._num_replicas_in_sync == 1:  # One replica takes the whole batch: nothing to count.
            return mirrored_run.call_for_each_replica(strategy, fn, args, kwargs)
        if isinstance(fn, def_function.Function):
            return self._trace_around_replicas(fn)(*args, **kwargs)
        if not context.executing_eagerly():
            # What mirrored_run would do to `fn`; it leaves the wrapper below unconverted.
            fn = autograph.tf_convert(fn, autograph_ctx.control_status_ctx())
        rows = _step.rows_per_replica((args, kwargs), self._num_replicas_in_sync)
        outer = _step.current()
        measurement = None
        if outer is None or outer.measurement is None:
            # A run inside a measured run's merge function belongs to the outer measurement.
            measurement, (args, kwargs) = self._split.start_measurement((args, kwargs), rows)
        step = _step.Step(
            rows,
            measurement,
            building_from_first_batch=outer is not None and outer.building_from_first_batch,
        )
        with _step.running(step):
            outputs = mirrored_run.call_for_each_replica(
                strategy, _step.wrap(fn, step), args, kwargs
            )
        if measurement is not None:
            measurement.finish(outputs)
        return outputs

    def _trace_around_replicas(self, fn):
        """`fn`, a `tf.function`, traced once around every replica rather than once in each.

        A `merge_call` cannot reach out of a function traced in a replica thread, so mirrored_run
        does this too (except for XLA functions on GPUs, which MirroredStrategy all-reduces
        without `merge_call`; this strategy always merges through it). Doing it here sends each
        trace back through `_call_for_each_replica`,
        which reads the row counts from the traced inputs (known only at run time when their
        batch dimension is unknown) instead of baking in those of the first call.
        """
        traced = self._traced_around_replicas.get(fn)
        if traced is None:
            python_function = fn.python_function

            def call_for_each_replica(*args, **kwargs):
                return self._call_for_each_replica(python_function, args, kwargs)

            # AutoGraph converts `python_function` in `_call_for_each_replica`, not this code.
            traced = fn._clone(  # pylint: disable=protected-access
                python_function=autograph.autograph_artifact(call_for_each_replica)
            )
            self._traced_around_replicas[fn] = traced
        return traced

    # -- variables -----------------------------------------------------------------------------

    def _create_variable(self, next_creator, **kwargs):
        if kwargs.get("synchronization", _AUTO) == variable_scope.VariableSynchronization.NONE:
            # As every tf.distribute strategy: a variable must say how replicas keep it in sync.
            raise ValueError(
                "`NONE` variable synchronization mode is not supported with ReplicaStrategy "
                "(nor any tf.distribute strategy). Please change the `synchronization` for "
                f"variable: {kwargs.get('name')!r}. Received: synchronization=NONE; use AUTO "
                "(the default), ON_WRITE, or ON_READ."
            )
        if kwargs.get("synchronization", _AUTO) == _AUTO:
            # What AUTO means under every tf.distribute strategy; variables report it.
            kwargs["synchronization"] = _ON_WRITE
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
        def reduce(value):
            value = _empty_replicas.finite_from_empty_replicas(value, _rows_in_step())
            return self._reduce_leaves(reduce_op, value, destinations, options)

        return _synchronize(value, reduce)

    def _batch_reduce_to(self, reduce_op, value_destination_pairs, options):
        def reduce(values_to_reduce):
            # Checks every value in one pass: one branch per replica, whatever their number.
            values_to_reduce = _empty_replicas.finite_from_empty_replicas(
                values_to_reduce, _rows_in_step()
            )
            return [
                self._reduce_leaves(reduce_op, value, destinations, options, in_batch=True)
                for value, (_, destinations) in zip(
                    values_to_reduce, value_destination_pairs, strict=True
                )
            ]

        return _synchronize([value for value, _ in value_destination_pairs], reduce)

    def _reduce_leaves(self, reduce_op, value, destinations, options, in_batch=False):
        def reduce_one(leaf):
            if isinstance(leaf, values.DistributedValues):
                _require_equal_shapes(leaf, reduce_op)
            elif not in_batch:
                return cross_device_ops_lib.reduce_non_distributed_value(
                    reduce_op, leaf, destinations, self._num_replicas_in_sync
                )
            # In a batch (all_reduce), a value every replica shares arrives as itself (merge_call
            # regroups it so): the cross-device op reduces it as one value, as TF's
            # CrossDeviceOps.batch_reduce does for MirroredStrategy. Keras optimizers rely on it.
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

    def replica_rows(self):
        """Inside `strategy.run`: (this replica's row count, the step's row counts).

        Read from the step's first batched input; each count is an int, or a scalar tensor when
        known only at run time. None outside `run`, or when the step has no batched input.
        """
        rows = _rows_in_step()
        replica_context = distribute_lib.get_replica_context()
        if (
            rows is None
            or replica_context is None
            or replica_context.strategy is not self._container_strategy()
        ):
            return None
        replica_id = tensor_util.constant_value(replica_context.replica_id_in_sync_group)
        return rows[replica_id], rows

    def replica_row_fraction(self):
        """This replica's share of the global batch, n_r / B, inside `strategy.run`.

        Read from the step's first batched input. Outside `run`, or when the step has no
        batched input, every replica counts the same: 1 / num_replicas_in_sync.
        """
        replica_rows = self.replica_rows()
        if replica_rows is None:
            return 1.0 / self._num_replicas_in_sync
        mine, rows = replica_rows
        if all(isinstance(count, int) for count in rows):
            return mine / max(sum(rows), 1)
        counts = [math_ops.cast(count, "float32") for count in rows]
        return math_ops.div_no_nan(math_ops.cast(mine, "float32"), math_ops.add_n(counts))

    def _gather_to_implementation(self, value, destinations, axis, options):
        def gather_one(leaf):
            if not isinstance(leaf, values.DistributedValues):
                return leaf
            batching.require_batch_axis(leaf.values)
            return self._cross_device_ops._gather(  # pylint: disable=protected-access
                leaf, destinations=destinations, axis=axis, options=options
            )

        return _synchronize(value, lambda value: nest.map_structure(gather_one, value))

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
        if self._split.resplits:
            return _split_input.distribute_dataset(
                dataset, self._split_input_workers(), self._container_strategy(), options
            )
        return super()._experimental_distribute_dataset(dataset, options)

    def _split_input_workers(self):
        """With `split`, every replica's part of a batch goes to the host, to be split again."""
        return input_lib.InputWorkers(
            [(self._worker_device, (self._worker_device,) * self._num_replicas_in_sync)]
        )

    def _distribute_datasets_from_function(self, dataset_fn, options):
        resplits = self._split.resplits and not (
            options
            and options.experimental_replication_mode
            == distribute_lib.InputReplicationMode.PER_REPLICA
        )
        input_workers = (
            self._split_input_workers() if resplits else self._input_workers_with_options(options)
        )
        input_contexts = [
            distribute_lib.InputContext(
                num_input_pipelines=input_workers.num_workers,
                input_pipeline_id=pipeline_id,
                num_replicas_in_sync=self._num_replicas_in_sync,
            )
            for pipeline_id in range(input_workers.num_workers)
        ]
        if resplits:
            return _split_input.distribute_datasets_from_function(
                dataset_fn, input_workers, input_contexts, self._container_strategy(), options
            )
        return input_util.get_distributed_datasets_from_function(
            dataset_fn, input_workers, input_contexts, self._container_strategy(), options
        )

    # -- Keras' build from the first batch --------------------------------------------------

    @contextlib.contextmanager
    def reducing_first_batch_to_build(self):
        """Marks the `reduce` calls in its body as Keras' build-time reduce (`_keras3_trainer`)."""
        step = _step.current()
        if step is None:
            with _step.running(_step.Step(building_from_first_batch=True)):
                yield
            return
        outer, step.building_from_first_batch = step.building_from_first_batch, True
        try:
            yield
        finally:
            step.building_from_first_batch = outer

    def reducing_first_batch_to_build_now(self) -> bool:
        step = _step.current()
        return step is not None and step.building_from_first_batch

    # -- facts ---------------------------------------------------------------------------------

    @property
    def merge_device(self):
        return self._merge_device

    @property
    def mirror_weights(self):
        return self._mirror_weights

    @property
    def split_in_force(self):
        """Each replica's fraction of a batch now, in replica order (`ReplicaStrategy.split`)."""
        return self._split.in_force()

    @property
    def weights_rows(self) -> bool:
        """Whether every model weighs each row 1/B in the gradient (`_row_weights`): always.

        True under every `split`, the even split included, so a batch that does not split
        evenly (a partial last batch) trains as on one device, not by tf.distribute's
        convention (each replica's mean loss weighted 1/N, MirroredStrategy's).
        """
        return True

    @property
    def experimental_between_graph(self):
        return False


def _is_trainable_on_write(kwargs):
    """Whether a variable creator's `kwargs` (AUTO already made ON_WRITE) ask for one."""
    return kwargs.get("synchronization") == _ON_WRITE and kwargs.get("trainable") is not False


def _valid_aggregation(kwargs):
    """Pops `aggregation` from a variable creator's `kwargs`, checked."""
    aggregation = kwargs.pop("aggregation", variable_scope.VariableAggregation.NONE)
    if aggregation not in _VALID_AGGREGATIONS:
        raise ValueError(
            f"Invalid variable aggregation {aggregation!r} for variable "
            f"{kwargs.get('name')!r}; expected one of {list(_VALID_AGGREGATIONS)}."
        )
    return aggregation


def _rows_in_step():
    """The row counts of the `run` under way in this thread (None: none, or no batched input)."""
    step = _step.current()
    return None if step is None else step.rows


def _synchronize(value, reduce_fn):
    """`reduce_fn(value)`, a synchronization point of the `run` under way, if any."""
    step = _step.current()
    return reduce_fn(value) if step is None else step.synchronize(value, reduce_fn)


def _require_equal_shapes(per_replica, reduce_op):
    """Raises when per-replica values cannot be reduced element by element.

    Reducing across replicas (axis=None) adds the replicas' values element by element. An uneven
    split gives replicas different row counts, and a per-example value then has a different
    shape on each: cutting rows to make them fit would drop samples silently.
    """
    shapes = [getattr(part, "shape", None) for part in per_replica.values]
    if any(not isinstance(shape, tensor_shape.TensorShape) for shape in shapes):
        return
    if all(shapes[0].is_compatible_with(shape) for shape in shapes[1:]):
        return
    op = reduce_op.value
    raise ValueError(
        f"Cannot {op} across replicas values of different shapes: the replicas hold shapes "
        f"{[shape.as_list() if shape.rank is not None else None for shape in shapes]}. "
        "An uneven split of the batch gives replicas different row counts. To reduce over "
        f"every row, use strategy.reduce('{op}', value, axis=0); to keep the rows, "
        "strategy.gather(value, axis=0) (in replica context: all_gather)."
    )
