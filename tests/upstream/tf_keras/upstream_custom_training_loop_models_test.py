"""tf_keras/distribute/custom_training_loop_models_test.py on ReplicaStrategy, as upstream wrote it."""

import tf_keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf

upstream = tf_keras_adapter.load("custom_training_loop_models_test")


@tf_keras_adapter.replica_strategy_cases
class KerasModelsTest(tf_keras_adapter.PlacementCase, upstream.KerasModelsTest):
    pass


if __name__ == "__main__":
    tf.test.main()
