"""tf_keras/distribute/checkpointing_test.py on ReplicaStrategy, as upstream wrote it."""

import tf_keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf

upstream = tf_keras_adapter.load("checkpointing_test")


@tf_keras_adapter.replica_strategy_cases
class TrainingCheckpointTests(tf_keras_adapter.PlacementCase, upstream.TrainingCheckpointTests):
    pass


if __name__ == "__main__":
    tf.test.main()
