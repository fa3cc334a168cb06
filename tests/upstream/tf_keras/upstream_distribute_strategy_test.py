"""tf_keras/distribute/distribute_strategy_test.py on ReplicaStrategy: two of its tests, as written.

The file runs hundreds of combinations over every strategy, too many for this suite on two CPU
cores; `test_gradient_clipping` and `test_custom_gradient_transformation` are the ones about
what tf_keras' optimizers do with the replicas' gradients (replica_strategy/_tf_keras_optimizer.py).
"""

import tf_keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf

upstream = tf_keras_adapter.load("distribute_strategy_test")


@tf_keras_adapter.replica_strategy_cases(
    only=("test_gradient_clipping", "test_custom_gradient_transformation")
)
class TestDistributionStrategyWithKerasModels(
    tf_keras_adapter.PlacementCase, upstream.TestDistributionStrategyWithKerasModels
):
    pass


if __name__ == "__main__":
    tf.test.main()
