"""tf_keras/distribute/keras_optimizer_v2_test.py on ReplicaStrategy, as upstream wrote it."""

import tf_keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf

upstream = tf_keras_adapter.load("keras_optimizer_v2_test")


@tf_keras_adapter.replica_strategy_cases
class MirroredStrategyOptimizerV2Test(
    tf_keras_adapter.PlacementCase, upstream.MirroredStrategyOptimizerV2Test
):
    pass


if __name__ == "__main__":
    tf.test.main()
