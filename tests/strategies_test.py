"""Tests for strategies.py and multi_worker.py: building each strategy by name."""

import os
import subprocess
import sys
import textwrap

import virtual_devices  # First: it gives the process its logical CPUs before TF initializes.

# isort: split

import tensorflow as tf
from absl.testing import parameterized

import replica_strategy
from replica_strategy import multi_worker, strategies

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MakeStrategyTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        ("replica", replica_strategy.ReplicaStrategy, 2),
        ("mirrored", tf.distribute.MirroredStrategy, 2),
        ("central_storage", tf.distribute.experimental.CentralStorageStrategy, 2),
        ("one_device", tf.distribute.OneDeviceStrategy, 1),
    )
    def test_each_local_strategy_runs_on_the_devices_given(self, name, kind, replicas):
        strategy = strategies.make_strategy(name, virtual_devices.cpus(2))
        self.assertIsInstance(strategy, kind)
        self.assertEqual(strategy.num_replicas_in_sync, replicas)

    def test_replica_options_reach_replica_strategy(self):
        strategy = strategies.make_strategy(
            "replica", virtual_devices.cpus(3)[1:], mirror_weights=True, split=(3, 1)
        )
        self.assertTrue(strategy.mirror_weights)
        self.assertAllClose(strategy.split, (0.75, 0.25))

    def test_default_is_the_default_strategy(self):
        self.assertIs(strategies.make_strategy("default"), tf.distribute.get_strategy())

    def test_multi_worker_without_a_cluster_is_one_worker(self):
        strategy = strategies.make_strategy("multi_worker")
        self.assertIsInstance(strategy, multi_worker.KerasMultiWorkerMirroredStrategy)
        self.assertEqual(strategy.num_replicas_in_sync, 1)

    def test_unknown_name_is_named_with_the_choices(self):
        with self.assertRaisesRegex(ValueError, r"Unknown strategy 'mirror'.*replica, mirrored"):
            strategies.make_strategy("mirror", virtual_devices.cpus(2))

    def test_replica_options_with_another_strategy_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"\['mirror_weights'\] apply to ReplicaStrategy"):
            strategies.make_strategy("mirrored", virtual_devices.cpus(2), mirror_weights=True)

    def test_mirrored_strategies_of_several_sizes_all_reduce_in_one_process(self):
        # Run apart: without keys of its own, the second MirroredStrategy's collective aborts
        # every later collective of the process. This fails loudly if TensorFlow renames or
        # stops reading `MirroredStrategy._collective_key_base`.
        script = textwrap.dedent(
            """
            import tensorflow as tf
            from replica_strategy import logical_devices, strategies

            cpus = logical_devices.split_cpu(4)

            def all_reduce(strategy):
                @tf.function
                def step():
                    context = lambda: tf.distribute.get_replica_context()
                    return strategy.run(lambda: context().all_reduce("SUM", tf.constant(1.0)))

                return float(strategy.experimental_local_results(step())[0])

            for count in (2, 4, 3, 2):
                print(all_reduce(strategies.make_strategy("mirrored", cpus[:count])))
            """
        )
        run = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2"),
            check=False,
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        self.assertEqual(run.stdout.split(), ["2.0", "4.0", "3.0", "2.0"])


class KerasMultiWorkerMirroredStrategyTest(tf.test.TestCase):
    """The `reduce` Keras 3's `fit` calls: nested structures, scalars with `axis=0`."""

    def test_reduces_a_tuple_with_a_scalar_along_axis_0(self):
        strategy = multi_worker.KerasMultiWorkerMirroredStrategy()
        results = strategy.run(lambda: (tf.constant(2.0), tf.constant([1.0, 2.0, 3.0])))
        scalar, vector = strategy.reduce("SUM", results, axis=0)
        self.assertAllClose(scalar, 2.0)
        self.assertAllClose(vector, 6.0)

    def test_tensorflow_s_own_reduce_still_refuses_it(self):
        # If this starts passing, TensorFlow fixed keras-team/keras#20585 and the subclass can go.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        results = strategy.run(lambda: (tf.constant(2.0), tf.constant([1.0, 2.0, 3.0])))
        with self.assertRaises(ValueError):
            strategy.reduce("SUM", results, axis=0)


if __name__ == "__main__":
    tf.test.main()
