"""TF's own strategy conformance checks, and the tf.distribute contract, for ReplicaStrategy.

Two parts:
- TF's shipped conformance bases (`strategy_test_lib.DistributionTestBase`, and the one- and
  two-device bases), run against ReplicaStrategy on 1, 2 and 4 logical CPUs, eagerly, inside
  `tf.function` and in TF1 graph mode wherever the base supports it. Each test is a one-liner
  over the base, as in TF's own `mirrored_strategy_test.py`.
- Direct contract tests the bases do not cover, with MirroredStrategy on the same devices as
  the oracle.

Every class runs in each placement of tests/placements.py (default, mirror_weights,
parameter_on_replica).
"""

import contextlib
import importlib.util
import itertools

import placements
import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorflow.python.distribute import device_util, distribute_lib, strategy_test_lib
from tensorflow.python.eager import context
from tensorflow.python.framework import ops

_REPLICA_COUNTS = (("one_replica", 1), ("two_replicas", 2), ("four_replicas", 4))
_MULTI_REPLICA_COUNTS = (("two_replicas", 2), ("four_replicas", 4))
_EAGER_AND_GRAPH = (("eager", "eager"), ("graph", "graph"))
_EAGER_FUNCTION_AND_GRAPH = (("eager", "eager"), ("function", "function"), ("graph", "graph"))

_SYNC = tf.VariableSynchronization
_AGGREGATION = tf.VariableAggregation


def _named_product(*axes):
    """Crosses named parameter axes into `named_parameters` tuples.

    Args:
      *axes: sequences of (name, value) pairs, e.g. `_REPLICA_COUNTS`.

    Returns:
      One tuple per combination: the joined names, then the values, e.g.
      ("two_replicas_graph", 2, "graph").
    """
    return [
        ("_".join(name for name, _ in combination), *(value for _, value in combination))
        for combination in itertools.product(*axes)
    ]


def _canonical(devices):
    return tuple(device_util.canonicalize(device) for device in devices)


def _local_numpy(strategy, value):
    return [tensor.numpy() for tensor in strategy.experimental_local_results(value)]


def _replica_id_as_float():
    replica_context = tf.distribute.get_replica_context()
    return tf.cast(replica_context.replica_id_in_sync_group, tf.float32)


@contextlib.contextmanager
def _execution_mode(mode):
    """Runs the body in TF1 graph mode (a fresh graph) for "graph", else eagerly."""
    if mode == "graph":
        with context.graph_mode(), ops.Graph().as_default():
            yield
    else:
        yield


# --- TensorFlow's conformance bases -------------------------------------------------------------


@placements.across_placements()
class DistributionConformanceTest(
    placements.PlacementTestCase, strategy_test_lib.DistributionTestBase, parameterized.TestCase
):
    """`DistributionTestBase`: the checks every tf.distribute strategy must pass."""

    def cached_session(self, graph=None, config=None, use_gpu=True, force_gpu=False):
        """Gives sessions with an explicit config the process's logical CPUs too.

        `_test_minimize_loss_graph` passes its own ConfigProto, which does not carry the logical
        CPU count: its session would have one CPU and could not place replica 1's ops.
        """
        if config is not None:
            config.device_count["CPU"] = len(tf.config.list_logical_devices("CPU"))
        return super().cached_session(graph, config, use_gpu, force_gpu)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_minimize_loss_eager(self, num_replicas):
        self._test_minimize_loss_eager(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_minimize_loss_graph(self, num_replicas):
        self._test_minimize_loss_graph(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_named_product(_REPLICA_COUNTS, _EAGER_AND_GRAPH))
    def test_replica_id(self, num_replicas, mode):
        with _execution_mode(mode):
            self._test_replica_id(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_named_product(_REPLICA_COUNTS, _EAGER_AND_GRAPH))
    def test_call_and_merge_exceptions(self, num_replicas, mode):
        with _execution_mode(mode):
            self._test_call_and_merge_exceptions(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_named_product(_REPLICA_COUNTS, _EAGER_AND_GRAPH))
    def test_global_step_update(self, num_replicas, mode):
        with _execution_mode(mode):
            self._test_global_step_update(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_named_product(_REPLICA_COUNTS, _EAGER_AND_GRAPH))
    def test_trainable_variable(self, num_replicas, mode):
        with _execution_mode(mode):
            self._test_trainable_variable(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_named_product(_REPLICA_COUNTS, _EAGER_AND_GRAPH))
    def test_summary_for_replica_zero_only(self, num_replicas, mode):
        with _execution_mode(mode):
            self._test_summary_for_replica_zero_only(self.replica_strategy(num_replicas))

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_input_fn_iterable(self, num_replicas):
        # Eager only: in TF1 graph mode a TF2 `distribute_datasets_from_function` result has no
        # initializable iterator, for MirroredStrategy too (its own test skips that mode).
        strategy = self.replica_strategy(num_replicas)
        input_fn = self._input_fn_to_test_input_context(
            lambda: tf.data.Dataset.range(12),
            expected_num_replicas_in_sync=num_replicas,
            expected_num_input_pipelines=1,
            expected_input_pipeline_id=0,
        )
        # Replica r of step s gets element s * N + r.
        expected = [
            list(range(start, start + num_replicas)) for start in range(0, 12, num_replicas)
        ]
        self._test_input_fn_iterable(strategy, input_fn, expected)

    @parameterized.named_parameters(
        *_named_product(_REPLICA_COUNTS, _EAGER_AND_GRAPH, (("dataset", True), ("callable", False)))
    )
    def test_make_input_fn_iterator(self, num_replicas, mode, use_dataset):
        with _execution_mode(mode):
            strategy = self.replica_strategy(num_replicas)
            input_fn = self._input_fn_to_test_input_context(
                _range_dataset_fn(12, use_dataset),
                expected_num_replicas_in_sync=num_replicas,
                expected_num_input_pipelines=1,
                expected_input_pipeline_id=0,
            )
            expected = [
                list(range(start, start + num_replicas)) for start in range(0, 12, num_replicas)
            ]
            iterator = strategy.make_input_fn_iterator(input_fn)
            self._test_input_fn_iterator(
                iterator,
                strategy.extended.worker_devices,
                expected,
                test_reinitialize=use_dataset,
                ignore_order=not use_dataset,
            )

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_numpy_dataset(self, num_replicas):
        strategy = self.replica_strategy(num_replicas)
        self.assertNotIsInstance(strategy, distribute_lib.StrategyV1)
        self.skipTest(
            "_test_numpy_dataset is TF1-only (StrategyV1.experimental_make_numpy_dataset and "
            "make_dataset_iterator); ReplicaStrategy is a TF2 tf.distribute.Strategy."
        )

    def test_remote_single_worker_checks(self):
        self.skipTest(
            "RemoteSingleWorkerMirroredStrategyBase (_testDeviceScope, _testMinimizeLoss, ...) "
            "checks a strategy connected to a remote '/job:worker' task; ReplicaStrategy is "
            "local. Its input-fn checks run here as test_make_input_fn_iterator."
        )


def _range_dataset_fn(size, use_dataset):
    """A `Dataset.range(size)`, or (TF1 style) a callable returning its `get_next`."""
    if use_dataset:
        return lambda: tf.data.Dataset.range(size)

    def get_next_fn():
        iterator = tf.compat.v1.data.make_one_shot_iterator(tf.data.Dataset.range(size))
        return iterator.get_next

    return get_next_fn


@placements.across_placements()
class OneReplicaConformanceTest(
    placements.PlacementTestCase,
    strategy_test_lib.OneDeviceDistributionTestBase,
    parameterized.TestCase,
):
    """`OneDeviceDistributionTestBase` on a one-replica ReplicaStrategy."""

    @parameterized.named_parameters(*_EAGER_AND_GRAPH)
    def test_run(self, mode):
        with _execution_mode(mode):
            self._test_run(self.replica_strategy(1))

    @parameterized.named_parameters(
        *_named_product(
            (
                ("sum", "_test_all_reduce_sum"),
                ("sum_gradients", "_test_all_reduce_sum_gradients"),
                ("sum_gradient_tape", "_test_all_reduce_sum_gradient_tape"),
                ("mean", "_test_all_reduce_mean"),
                ("mean_gradients", "_test_all_reduce_mean_gradients"),
                ("mean_gradient_tape", "_test_all_reduce_mean_gradient_tape"),
            ),
            _EAGER_AND_GRAPH,
        )
    )
    def test_all_reduce(self, check_name, mode):
        # The base itself skips `tf.gradients` checks when eager.
        with _execution_mode(mode):
            getattr(self, check_name)(self.replica_strategy(1))

    def test_device_and_input_device_are_colocated(self):
        if importlib.util.find_spec("portpicker") is None:
            self.skipTest(
                "_test_device_and_input_device_are_colocated needs portpicker (for "
                "test_util.create_local_cluster), which the venv does not install."
            )
        with _execution_mode("graph"):
            self._test_device_and_input_device_are_colocated(self.replica_strategy(1))


@placements.across_placements()
class TwoReplicaConformanceTest(
    placements.PlacementTestCase,
    strategy_test_lib.TwoDeviceDistributionTestBase,
    parameterized.TestCase,
):
    """`TwoDeviceDistributionTestBase` on two replicas, eager, in tf.function and in graph mode.

    The base hard-codes two replicas; `ReplicaContextContractTest` covers four.
    """

    @parameterized.named_parameters(
        *_named_product(
            (
                ("run", "_test_run"),
                ("all_reduce_sum", "_test_all_reduce_sum"),
                ("all_reduce_sum_gradients", "_test_all_reduce_sum_gradients"),
                ("all_reduce_sum_gradient_tape", "_test_all_reduce_sum_gradient_tape"),
                ("all_reduce_mean", "_test_all_reduce_mean"),
                ("all_reduce_mean_gradients", "_test_all_reduce_mean_gradients"),
                ("all_reduce_mean_gradient_tape", "_test_all_reduce_mean_gradient_tape"),
            ),
            _EAGER_FUNCTION_AND_GRAPH,
        )
    )
    def test_two_device_check(self, check_name, mode):
        # The base itself skips `tf.gradients` checks when eager outside a tf.function.
        with _execution_mode(mode):
            getattr(self, check_name)(self.replica_strategy(2), run_in_function=mode == "function")


# --- Direct contract tests, MirroredStrategy as the oracle --------------------------------------


@placements.across_placements()
class ReplicaPlacementTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_run_in_function_places_each_replica_on_its_device(self, num_replicas):
        expected_devices = _canonical(self.replica_devices(num_replicas))
        ours = _replica_placement(self.replica_strategy(num_replicas))
        mirrored = _replica_placement(self.collective_mirrored_strategy(num_replicas))
        self.assertEqual(ours["op_devices"], expected_devices)
        self.assertEqual(ours["eager_result_devices"], expected_devices)
        self.assertEqual(ours, mirrored)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_num_replicas_in_sync(self, num_replicas):
        self.assertEqual(self.replica_strategy(num_replicas).num_replicas_in_sync, num_replicas)
        self.assertEqual(
            self.collective_mirrored_strategy(num_replicas).num_replicas_in_sync, num_replicas
        )

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_parameter_and_worker_devices(self, num_replicas):
        strategy = self.replica_strategy(num_replicas, parameter_device="/cpu:3")
        self.assertEqual(_canonical(strategy.extended.parameter_devices), _canonical(["/cpu:3"]))
        self.assertEqual(
            _canonical(strategy.extended.worker_devices),
            _canonical(self.collective_mirrored_strategy(num_replicas).extended.worker_devices),
        )


def _replica_placement(strategy):
    """Where a strategy's replicas run: op devices in a tf.function and result devices.

    Returns:
      A dict of tuples in replica order: "op_devices" (devices of ops traced in each replica of
      `strategy.run(tf.function)`), "function_result_devices" (devices of its per-replica
      results) and "eager_result_devices" (of an eager `strategy.run`).
    """
    op_devices = {}

    @tf.function
    def replica_fn():
        value = tf.constant(1.0) + _replica_id_as_float()
        replica_id = tf.get_static_value(
            tf.distribute.get_replica_context().replica_id_in_sync_group
        )
        op_devices[int(replica_id)] = value.device
        return value

    function_results = strategy.experimental_local_results(strategy.run(replica_fn))
    eager_results = strategy.experimental_local_results(
        strategy.run(lambda: tf.constant(1.0) + _replica_id_as_float())
    )
    return {
        "op_devices": tuple(op_devices[replica] for replica in sorted(op_devices)),
        "function_result_devices": tuple(result.device for result in function_results),
        "eager_result_devices": tuple(result.device for result in eager_results),
    }


@placements.across_placements()
class ReplicaContextContractTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    @parameterized.named_parameters(
        *_named_product(_REPLICA_COUNTS, (("sum", "SUM"), ("mean", "MEAN")))
    )
    def test_all_reduce_and_its_gradient_match_mirrored(self, num_replicas, reduce_op):
        ours = _all_reduce_with_gradient(self.replica_strategy(num_replicas), reduce_op)
        mirrored = _all_reduce_with_gradient(
            self.collective_mirrored_strategy(num_replicas), reduce_op
        )
        # Replica r contributes (r + 1) * [1, 2]; the gradient of all_reduce(x) * c is
        # all_reduce(c), with c = r + 1 too.
        total = num_replicas * (num_replicas + 1) / 2
        expected = total if reduce_op == "SUM" else total / num_replicas
        for replica in range(num_replicas):
            self.assertAllClose(ours["reduced"][replica], [expected, 2 * expected])
            self.assertAllClose(ours["gradient"][replica], [expected, expected])
        self.assertAllClose(ours["reduced"], mirrored["reduced"])
        self.assertAllClose(ours["gradient"], mirrored["gradient"])

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_all_gather_of_even_shapes_matches_mirrored(self, num_replicas):
        def gather_fn():
            value = tf.fill([2, 3], _replica_id_as_float())
            return tf.distribute.get_replica_context().all_gather(value, axis=0)

        strategy = self.replica_strategy(num_replicas)
        ours = _local_numpy(strategy, _run_in_function(strategy, gather_fn))
        strategy = self.collective_mirrored_strategy(num_replicas)
        mirrored = _local_numpy(strategy, _run_in_function(strategy, gather_fn))
        expected = np.repeat(np.arange(num_replicas, dtype=np.float32), 2)[:, None] * np.ones(3)
        for gathered in ours:
            self.assertAllEqual(gathered, expected)
        self.assertAllEqual(ours, mirrored)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_all_gather_of_uneven_shapes_concatenates_in_replica_order(self, num_replicas):
        # Replica r holds r + 1 rows of value r. (MirroredStrategy's collective gather fails on
        # uneven shapes with four CPUs, so the expected value is written out.)
        def gather_fn():
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            value = tf.fill(tf.stack([replica_id + 1, 2]), _replica_id_as_float())
            return tf.distribute.get_replica_context().all_gather(value, axis=0)

        strategy = self.replica_strategy(num_replicas)
        expected = np.concatenate(
            [np.full([replica + 1, 2], replica, np.float32) for replica in range(num_replicas)]
        )
        for gathered in _local_numpy(strategy, _run_in_function(strategy, gather_fn)):
            self.assertAllEqual(gathered, expected)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_merge_call_runs_once_in_cross_replica_context(self, num_replicas):
        ours = _merged_sum(self.replica_strategy(num_replicas))
        mirrored = _merged_sum(self.collective_mirrored_strategy(num_replicas))
        total = num_replicas * (num_replicas + 1) / 2
        for merged in ours["merged"]:
            self.assertEqual(merged, total)
        self.assertEqual(ours["merge_fn_calls"], [True])
        self.assertEqual(ours, mirrored)

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_experimental_local_results(self, num_replicas):
        strategy = self.replica_strategy(num_replicas, parameter_device="/cpu:3")
        per_replica = strategy.run(lambda: _replica_id_as_float() * 10.0)
        self.assertAllEqual(_local_numpy(strategy, per_replica), 10.0 * np.arange(num_replicas))
        plain = tf.constant(5.0)
        self.assertEqual(strategy.experimental_local_results(plain), (plain,))
        with strategy.scope():
            variable = tf.Variable(1.0)
        local_variables = strategy.experimental_local_results(variable)
        if self.placement == placements.MIRROR_WEIGHTS:
            # As MirroredStrategy's: each replica's working copy, on that replica's device.
            self.assertEqual(
                tuple(copy.device for copy in local_variables),
                _canonical(strategy.extended.worker_devices),
            )
            self.assertAllEqual([copy.numpy() for copy in local_variables], [1.0] * num_replicas)
        else:
            # One copy of a (non-ON_READ) variable, on the parameter device, whatever N is.
            (local_variable,) = local_variables
            self.assertEqual(local_variable.device, device_util.canonicalize("/cpu:3"))

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_distribute_values_from_function_matches_mirrored(self, num_replicas):
        def value_fn(value_context):
            replica_id = value_context.replica_id_in_sync_group
            return tf.constant(10 * replica_id + value_context.num_replicas_in_sync)

        results = []
        for strategy in (
            self.replica_strategy(num_replicas),
            self.collective_mirrored_strategy(num_replicas),
        ):
            values = strategy.experimental_distribute_values_from_function(value_fn)
            # Each replica receives its own value.
            results.append(_local_numpy(strategy, strategy.run(lambda value: value + 1, (values,))))
        expected = [10 * replica + num_replicas + 1 for replica in range(num_replicas)]
        self.assertAllEqual(results[0], expected)
        self.assertAllEqual(results[0], results[1])


def _run_in_function(strategy, replica_fn):
    return tf.function(lambda: strategy.run(replica_fn))()


def _all_reduce_with_gradient(strategy, reduce_op):
    def replica_fn():
        scale = _replica_id_as_float() + 1.0
        value = scale * tf.constant([1.0, 2.0])
        with tf.GradientTape() as tape:
            tape.watch(value)
            reduced = tf.distribute.get_replica_context().all_reduce(reduce_op, value)
            scaled = tf.reduce_sum(reduced * scale)
        return reduced, tape.gradient(scaled, value)

    reduced, gradient = _run_in_function(strategy, replica_fn)
    return {
        "reduced": _local_numpy(strategy, reduced),
        "gradient": _local_numpy(strategy, gradient),
    }


def _merged_sum(strategy):
    merge_fn_calls = []

    def merge_fn(merge_strategy, value):
        merge_fn_calls.append(tf.distribute.in_cross_replica_context())
        return merge_strategy.reduce("SUM", value, axis=None)

    def replica_fn():
        replica_context = tf.distribute.get_replica_context()
        return replica_context.merge_call(merge_fn, args=(_replica_id_as_float() + 1.0,))

    merged = _run_in_function(strategy, replica_fn)
    return {"merged": _local_numpy(strategy, merged), "merge_fn_calls": merge_fn_calls}


@placements.across_placements()
class VariablePlacementContractTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_colocate_vars_with_creates_the_slot_beside_its_variable(self, num_replicas):
        strategy = self.replica_strategy(num_replicas, parameter_device="/cpu:3")
        with strategy.scope():
            variable = tf.Variable([1.0, 2.0])
            with strategy.extended.colocate_vars_with(variable):
                slot = tf.Variable([0.0, 0.0])
        self.assertEqual(variable.device, device_util.canonicalize("/cpu:3"))
        self.assertEqual(slot.device, variable.device)
        self.assertLen(strategy.experimental_local_results(slot), 1)

    @parameterized.named_parameters(*_MULTI_REPLICA_COUNTS)
    @placements.default_placement_only  # Only the oracle: no ReplicaStrategy here.
    def test_colocate_vars_with_matches_mirrored_copies(self, num_replicas):
        strategy = self.collective_mirrored_strategy(num_replicas)
        with strategy.scope():
            variable = tf.Variable([1.0, 2.0])
            with strategy.extended.colocate_vars_with(variable):
                slot = tf.Variable([0.0, 0.0])
        # The oracle's convention: a slot lives wherever its variable's copies live.
        self.assertEqual(
            [copy.device for copy in slot.values], [copy.device for copy in variable.values]
        )

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_keras_optimizer_slots_live_on_the_parameter_device(self, num_replicas):
        strategy = self.replica_strategy(num_replicas, parameter_device="/cpu:3")
        with strategy.scope():
            model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
            optimizer = tf.keras.optimizers.Adam()
            optimizer.build(model.trainable_variables)
        devices = {variable.value.device for variable in model.weights + optimizer.variables}
        self.assertEqual(devices, {device_util.canonicalize("/cpu:3")})

    @parameterized.named_parameters(*_REPLICA_COUNTS)
    def test_extended_update_applies_once_like_mirrored(self, num_replicas):
        values = []
        for strategy in (
            self.replica_strategy(num_replicas),
            self.collective_mirrored_strategy(num_replicas),
        ):
            with strategy.scope():
                variable = tf.Variable([1.0, 2.0])
            strategy.extended.update(
                variable,
                lambda copy, delta: copy.assign_add(delta),
                args=(tf.constant([1.0, 1.0]),),
            )
            values.append(variable.numpy())
        self.assertAllEqual(values[0], [2.0, 3.0])
        self.assertAllEqual(values[0], values[1])

    def test_variable_created_in_scope(self):
        strategy = self.replica_strategy(2)
        with strategy.scope():
            inside = tf.Variable(1.0)
        outside = tf.Variable(1.0)
        other_strategy = self.replica_strategy(2)
        with other_strategy.scope():
            in_other_scope = tf.Variable(1.0)
        self.assertTrue(strategy.extended.variable_created_in_scope(inside))
        self.assertFalse(strategy.extended.variable_created_in_scope(outside))
        self.assertFalse(strategy.extended.variable_created_in_scope(in_other_scope))


def _valid_variable_kinds():
    """Every synchronization x aggregation TF accepts, named, with the `trainable` used.

    ON_READ variables are non-trainable here (Keras refuses trainable ON_READ weights).
    """
    kinds = []
    for synchronization in (_SYNC.AUTO, _SYNC.ON_WRITE, _SYNC.ON_READ):
        for aggregation in (
            _AGGREGATION.NONE,
            _AGGREGATION.SUM,
            _AGGREGATION.MEAN,
            _AGGREGATION.ONLY_FIRST_REPLICA,
        ):
            name = f"{synchronization.name.lower()}_{aggregation.name.lower()}"
            kinds.append((name, synchronization, aggregation))
    return kinds


@placements.across_placements()
class VariableSemanticsContractTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    """Replica-context writes to every kind of variable, read back as MirroredStrategy does."""

    @parameterized.named_parameters(
        *[
            (f"{count_name}_{kind_name}", num_replicas, synchronization, aggregation)
            for count_name, num_replicas in _MULTI_REPLICA_COUNTS
            for kind_name, synchronization, aggregation in _valid_variable_kinds()
        ]
    )
    def test_replica_writes_read_back_like_mirrored(
        self, num_replicas, synchronization, aggregation
    ):
        # Each step, replica r runs assign_add(r + 1). Cross-replica reads after each of 3 steps
        # must match MirroredStrategy: applied exactly once per step, aggregated as declared
        # (ON_WRITE + NONE: MirroredStrategy reads its primary copy, replica 0's).
        ours = _values_after_replica_writes(
            self.replica_strategy(num_replicas), synchronization, aggregation
        )
        mirrored = _values_after_replica_writes(
            self.collective_mirrored_strategy(num_replicas), synchronization, aggregation
        )
        self.assertEqual(ours, mirrored)
        if isinstance(ours["reads"], list):
            step_increment = _expected_step_increment(num_replicas, synchronization, aggregation)
            self.assertAllClose(ours["reads"], [step_increment * step for step in (1, 2, 3)])


def _expected_step_increment(num_replicas, synchronization, aggregation):
    total = num_replicas * (num_replicas + 1) / 2
    if aggregation in (_AGGREGATION.NONE, _AGGREGATION.ONLY_FIRST_REPLICA):
        return 1.0
    return total if aggregation == _AGGREGATION.SUM else total / num_replicas


def _values_after_replica_writes(strategy, synchronization, aggregation):
    """Runs 3 steps of replica-context `assign_add(replica_id + 1)`.

    Returns:
      {"reads": the cross-replica value after each step (or the error type when reading is
      refused, as for ON_READ + NONE), "local": per-copy values after the last step for ON_READ
      variables (one copy per replica), else None}.
    """
    with strategy.scope():
        variable = tf.Variable(
            0.0,
            synchronization=synchronization,
            aggregation=aggregation,
            trainable=synchronization != _SYNC.ON_READ,
        )

    @tf.function
    def step():
        strategy.run(lambda: variable.assign_add(_replica_id_as_float() + 1.0))

    reads = []
    for _ in range(3):
        step()
        try:
            reads.append(float(variable.read_value().numpy()))
        except ValueError as error:
            reads = f"ValueError: {str(error)[:40]}"
            break
    local = None
    if synchronization == _SYNC.ON_READ:
        local = [float(value) for value in _local_numpy(strategy, variable)]
    return {"reads": reads, "local": local}


if __name__ == "__main__":
    tf.test.main()
