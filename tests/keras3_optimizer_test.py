"""Keras 3 optimizers clip the summed gradient under `ReplicaStrategy` (`_keras3_optimizer`).

Keras 3 clips each replica's gradient before the cross-replica sum, under every tf.distribute
strategy. Under ReplicaStrategy the clip acts on the sum, once: `fit` and custom loops that
call `apply_gradients` give one device's weights, in every placement. Other strategies, and
one replica, keep Keras' order.
"""

import keras_testing
import placements
import virtual_devices

# isort: split

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from replica_strategy import FusedAdam, ReplicaStrategy

_FEATURES = 3
_CLIPS = {
    "clipnorm": dict(clipnorm=0.3),
    "global_clipnorm": dict(global_clipnorm=0.3),
    "clipvalue": dict(clipvalue=0.05),
}
_OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "fused_adam": FusedAdam}


def _strategy(placement, num_replicas=2):
    return placements.replica_strategy(placement, num_replicas)


def _data(rows=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    # Large targets: every clip below acts on every step.
    return x, (10 * x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 3).astype("float32")


def _mlp(optimizer):
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((_FEATURES,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _custom_loop(strategy, optimizer, x, y, batch_size=8):
    """Trains `_mlp` for one epoch with `strategy.run` and `apply_gradients`."""
    model = keras_testing.in_scope(strategy, _mlp, optimizer)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    )

    @tf.function
    def step(batch):
        def replica_step(features, labels):
            with tf.GradientTape() as tape:
                per_example = keras.losses.mean_squared_error(labels, model(features))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        strategy.run(replica_step, args=batch)

    for batch in dataset:
        step(batch)
    return model


class ClippingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(
        clip=sorted(_CLIPS), optimizer=sorted(_OPTIMIZERS), placement=placements.PLACEMENTS
    )
    def test_fit_clips_like_one_device(self, clip, optimizer, placement):
        x, y = _data()

        def build():
            return _mlp(_OPTIMIZERS[optimizer](0.05, **_CLIPS[clip]))

        reference = build()
        model = keras_testing.in_scope(_strategy(placement), build)
        reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 2e-6)

    @parameterized.product(clip=sorted(_CLIPS), placement=placements.PLACEMENTS)
    def test_custom_loop_clips_like_one_device(self, clip, placement):
        x, y = _data()
        reference = _mlp(keras.optimizers.SGD(0.05, **_CLIPS[clip]))
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model = _custom_loop(_strategy(placement), keras.optimizers.SGD(0.05, **_CLIPS[clip]), x, y)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 2e-6)

    @parameterized.parameters(sorted(_CLIPS))
    def test_four_replicas(self, clip):
        x, y = _data()
        reference = _mlp(keras.optimizers.SGD(0.05, **_CLIPS[clip]))
        model = keras_testing.in_scope(
            _strategy("default", 4), _mlp, keras.optimizers.SGD(0.05, **_CLIPS[clip])
        )
        reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 2e-6)

    @parameterized.parameters(sorted(_CLIPS))
    def test_mirrored_strategy_keeps_keras_per_replica_clipping(self, clip):
        # The adaptation acts under ReplicaStrategy only: MirroredStrategy still clips each
        # replica's gradient, and so differs from one device.
        x, y = _data()
        reference = _mlp(keras.optimizers.SGD(0.05, **_CLIPS[clip]))
        model = keras_testing.in_scope(
            virtual_devices.mirrored_strategy(2), _mlp, keras.optimizers.SGD(0.05, **_CLIPS[clip])
        )
        reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        self.assertGreater(keras_testing.max_weight_difference(model, reference), 1e-3)

    def test_one_replica_is_one_device(self):
        x, y = _data()
        reference = _mlp(keras.optimizers.SGD(0.05, clipnorm=0.3))
        model = keras_testing.in_scope(
            ReplicaStrategy(["/cpu:1"]), _mlp, keras.optimizers.SGD(0.05, clipnorm=0.3)
        )
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-6)


if __name__ == "__main__":
    tf.test.main()
