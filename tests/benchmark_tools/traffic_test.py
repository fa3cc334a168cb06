"""Bytes that cross devices per training step (benchmarks/traffic.py), measured, per placement.

Host "/cpu:0" holds ReplicaStrategy's weights; the replicas are "/cpu:1" ... "/cpu:N". P is the
bytes of the trainable weights. Each configuration runs in its own child process (the memory log
must be on before TensorFlow loads); a small MLP keeps the whole file near a minute.
"""

import unittest

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import tensorflow as tf

import replica_strategy
from benchmarks import traffic

_REPLICA_COUNTS = (2, 4)
_WIDTH = 32
_HAS_MIRROR_WEIGHTS = traffic.has_mirror_weights(replica_strategy.ReplicaStrategy)
_NO_MIRROR_WEIGHTS = (
    "ReplicaStrategy has no mirror_weights parameter yet (issue 9, point 1); these invariants "
    "run once it has."
)
# Bytes that are not parameters also cross: scalars such as the step counter to each replica and
# its loss terms back (16 bytes per replica measured); allowed up to this many per replica.
_SCALAR_BYTES_PER_REPLICA = 32


def _host_bytes(result):
    totals = traffic.class_totals(result["pairs"])
    return totals[traffic.FROM_HOST] + totals[traffic.TO_HOST]


def _replica_bytes(result):
    return traffic.class_totals(result["pairs"])[traffic.BETWEEN_REPLICAS]


class TrafficTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        configurations = [traffic.NO_STRATEGY, traffic.MIRRORED, traffic.REPLICA]
        if _HAS_MIRROR_WEIGHTS:
            configurations.append(traffic.MIRROR_WEIGHTS)
        results = traffic.measure_all(_REPLICA_COUNTS, configurations, width=_WIDTH, layers=1)
        cls.results = {(result["configuration"], result["replicas"]): result for result in results}

    def _result(self, configuration, replicas):
        result = self.results[(configuration, replicas)]
        self.assertIn("pairs", result, msg=f"{configuration} x{replicas}: {result}")
        return result

    def assertBytes(self, measured, expected_multiple_of_p, result):
        self.assertAllClose(
            measured,
            expected_multiple_of_p * result["parameter_bytes"],
            atol=_SCALAR_BYTES_PER_REPLICA * result["replicas"],
            rtol=0,
            msg=f"{result['configuration']} x{result['replicas']}: {result['pairs']}",
        )

    def test_no_strategy_moves_nothing(self):
        for replicas in _REPLICA_COUNTS:
            self.assertEqual(self._result(traffic.NO_STRATEGY, replicas)["pairs"], {})

    def test_default_mode_moves_two_n_p_through_the_host(self):
        # Each replica reads every weight from the host and sends its whole gradient back.
        for replicas in _REPLICA_COUNTS:
            result = self._result(traffic.REPLICA, replicas)
            self.assertBytes(_host_bytes(result), 2 * replicas, result)
            totals = traffic.class_totals(result["pairs"])
            self.assertBytes(totals[traffic.FROM_HOST], replicas, result)
            self.assertBytes(_replica_bytes(result), 0, result)

    def test_mirrored_strategy_moves_nothing_through_the_host(self):
        # ReductionToOneDevice: N - 1 gradients to replica 0 and N - 1 sums back.
        for replicas in _REPLICA_COUNTS:
            result = self._result(traffic.MIRRORED, replicas)
            self.assertBytes(_host_bytes(result), 0, result)
            self.assertBytes(_replica_bytes(result), 2 * (replicas - 1), result)

    @unittest.skipUnless(_HAS_MIRROR_WEIGHTS, _NO_MIRROR_WEIGHTS)
    def test_mirror_weights_moves_two_p_through_the_host(self):
        # One summed gradient to the host, one updated value back; the rest among the replicas.
        for replicas in _REPLICA_COUNTS:
            result = self._result(traffic.MIRROR_WEIGHTS, replicas)
            self.assertBytes(_host_bytes(result), 2, result)
            self.assertBytes(_replica_bytes(result), 2 * (replicas - 1), result)

    def test_variables_per_device_with_adam(self):
        # Adam: weights + 2 slots = 3 P (its counters are scalars).
        for replicas in _REPLICA_COUNTS:
            default = self._result(traffic.REPLICA, replicas)
            self.assertBytes(default["variable_bytes"][traffic.HOST], 3, default)
            for index in range(1, replicas + 1):
                self.assertBytes(default["variable_bytes"].get(f"/cpu:{index}", 0), 0, default)
            mirrored = self._result(traffic.MIRRORED, replicas)
            self.assertNotIn(traffic.HOST, mirrored["variable_bytes"])
            for index in range(1, replicas + 1):
                self.assertBytes(mirrored["variable_bytes"][f"/cpu:{index}"], 3, mirrored)

    @unittest.skipUnless(_HAS_MIRROR_WEIGHTS, _NO_MIRROR_WEIGHTS)
    def test_mirror_weights_keeps_optimizer_state_on_the_host_only(self):
        for replicas in _REPLICA_COUNTS:
            result = self._result(traffic.MIRROR_WEIGHTS, replicas)
            self.assertBytes(result["variable_bytes"][traffic.HOST], 3, result)
            for index in range(1, replicas + 1):
                self.assertBytes(result["variable_bytes"][f"/cpu:{index}"], 1, result)

    def test_tables_show_every_configuration(self):
        results = list(self.results.values())
        table = traffic.traffic_table(results)
        self.assertIn(f"| {traffic.REPLICA} | 4 |", table)
        self.assertIn("4.00 P", table)  # default mode, N = 4: 4 P each way through the host
        self.assertIn(f"| {traffic.MIRRORED} | 2 |", traffic.memory_table(results))


class MemoryLogTest(tf.test.TestCase):
    def test_parses_shape_and_dtype_of_a_logged_output(self):
        # A line as TensorFlow 2.21 writes it with TF_CPP_VMODULE=log_memory=2.
        line = (
            "I0000 00:00:1795701792.789948 5843 log_memory.cc:34] __LOG_MEMORY__ "
            "MemoryLogTensorOutput { goo.gle/debugstr   step_id: -99 kernel_name: "
            '"StatefulPartitionedCall/dense/Cast/ReadVariableOp/_4" tensor { dtype: DT_FLOAT '
            "shape { dim { size: 32 } dim { size: 64 } } allocation_description { "
            'requested_bytes: 8192 allocator_name: "mklcpu" } } }'
        )
        (tensor,) = traffic.parse_memory_log([line, "I0000 unrelated line"])
        self.assertEqual(tensor.step_id, -99)
        self.assertEqual(tensor.node, "StatefulPartitionedCall/dense/Cast/ReadVariableOp/_4")
        self.assertEqual((tensor.dtype, tensor.shape), ("DT_FLOAT", (32, 64)))

    def test_pair_classes(self):
        self.assertEqual(traffic.pair_class("/cpu:0", "/cpu:2"), traffic.FROM_HOST)
        self.assertEqual(traffic.pair_class("/cpu:2", "/cpu:0"), traffic.TO_HOST)
        self.assertEqual(traffic.pair_class("/cpu:1", "/cpu:2"), traffic.BETWEEN_REPLICAS)


if __name__ == "__main__":
    tf.test.main()
