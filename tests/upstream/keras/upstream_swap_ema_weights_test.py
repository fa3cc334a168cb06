"""keras/src/callbacks/swap_ema_weights_test.py: its tf.distribute test, on ReplicaStrategy."""

import keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import tensorflow as tf

import placements

upstream = keras_adapter.load("src/callbacks/swap_ema_weights_test.py")


@placements.across_placements()
class SwapEMAWeightsTest(keras_adapter.PlacementCase, upstream.SwapEMAWeightsTest):
    # ReplicaStrategy: the file's other tests use no strategy; they are Keras' to run, not ours.
    # None: neither pytest nor unittest collects them.
    test_swap_ema_weights_with_invalid_optimizer = None
    test_swap_ema_weights = None
    test_swap_ema_weights_on_epoch = None
    test_swap_ema_weights_with_loss_scale_optimizer = None


if __name__ == "__main__":
    tf.test.main()
