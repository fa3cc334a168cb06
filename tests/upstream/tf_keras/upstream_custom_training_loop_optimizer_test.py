"""tf_keras/distribute/custom_training_loop_optimizer_test.py on ReplicaStrategy.

Two cases adapted, below; the others run as upstream wrote them.
"""

import tf_keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf
from tensorflow.python.distribute import values
from tf_keras.src.optimizers.legacy import gradient_descent

upstream = tf_keras_adapter.load("custom_training_loop_optimizer_test")


@tf_keras_adapter.replica_strategy_cases(one_replica_in_every_placement=True)
class OptimizerTest(tf_keras_adapter.PlacementCase, upstream.OptimizerTest):
    def test_custom_aggregation_test_distribution_ReplicaStrategy2CPUs_mode_eager_expected_01010202_experimentalaggregategradients_False(
        self,
    ):
        # ReplicaStrategy: upstream expects [[-0.1, -0.1], [-0.2, -0.2]], each replica's copy of
        # `v` updated with that replica's gradient alone (MirroredStrategy's copies). One copy
        # cannot hold two values: ReplicaStrategy raises, and applies nothing, instead of
        # applying one replica's gradient. Upstream's test body otherwise.
        distribution = self.replica_strategy(2)
        with distribution.scope():
            v = tf.Variable([0.0, 0.0])
            optimizer = gradient_descent.SGD(0.1)

        class PerReplica(values.DistributedValues):
            @property
            def values(self):
                return self._values

        @tf.function
        def optimize():
            with tf.device(distribution.extended.worker_devices[0]):
                v1 = tf.convert_to_tensor([1.0, 1.0])
            with tf.device(distribution.extended.worker_devices[1]):
                v2 = tf.convert_to_tensor([2.0, 2.0])
            grads = PerReplica([v1, v2])

            def step_fn(grads):
                optimizer.apply_gradients([(grads, v)], experimental_aggregate_gradients=False)
                return v.read_value()

            return distribution.experimental_local_results(distribution.run(step_fn, args=(grads,)))

        with self.assertRaisesRegex(NotImplementedError, "one copy of each variable"):
            optimize()
        self.assertAllClose(v, [0.0, 0.0])

    def test_custom_aggregation_central_storage_test_distribution_ReplicaStrategy2CPUs(self):
        # ReplicaStrategy: upstream asserts NotImplementedError, which tf_keras raises for
        # CentralStorageStrategy whatever the gradients. Here the flag means what tf_keras
        # documents (the caller aggregated them), and every replica holds this one gradient:
        # it is applied once, as each of MirroredStrategy's copies takes it once. A different
        # gradient on each replica raises (the case above).
        distribution = self.replica_strategy(2)
        with distribution.scope():
            v = tf.Variable([0.0, 0.0])
            optimizer = gradient_descent.SGD(0.1)

        grads = tf.convert_to_tensor([1.0, 1.0])

        def step_fn(grads):
            optimizer.apply_gradients([(grads, v)], experimental_aggregate_gradients=False)

        distribution.run(step_fn, args=(grads,))
        self.assertAllClose(v, [-0.1, -0.1])


if __name__ == "__main__":
    tf.test.main()
