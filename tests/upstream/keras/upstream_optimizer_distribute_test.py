"""keras/src/backend/tensorflow/optimizer_distribute_test.py on ReplicaStrategy, as upstream wrote it."""

import keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf

import placements

upstream = keras_adapter.load("src/backend/tensorflow/optimizer_distribute_test.py")


@placements.across_placements()
class OptimizerDistributeTest(keras_adapter.PlacementCase, upstream.OptimizerDistributeTest):
    pass


if __name__ == "__main__":
    tf.test.main()
