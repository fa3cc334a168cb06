"""tf_keras optimizers under `ReplicaStrategy` (`replica_strategy/_tf_keras_optimizer.py`).

Told to aggregate (the default), tf_keras sums the replicas' gradients, then clips or
transforms the sum: training equals one device, under every placement and through
`multi_gpu_model`. Told not to aggregate, the gradients must already be one gradient (the
caller summed them), else a `NotImplementedError` says how to fix the call.
"""

import keras_testing
import placements
import virtual_devices

# isort: split

import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized

from replica_strategy import ReplicaStrategy, multi_gpu_model

_FEATURES = 3


def _strategy(placement, num_replicas=2):
    return placements.replica_strategy(placement, num_replicas)


def _data(rows=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    # Large targets: every clip below acts on every step.
    return x, (10 * x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 3).astype("float32")


def _double_gradients(grads_and_vars):
    return [(2.0 * gradient, variable) for gradient, variable in grads_and_vars]


# name -> (optimizer factory). Legacy OptimizerV2 and the current tf_keras Optimizer, each
# with every way it transforms gradients after aggregating them.
_OPTIMIZERS = {
    "legacy_sgd_clipnorm": lambda: tf_keras.optimizers.legacy.SGD(0.05, clipnorm=0.3),
    "legacy_sgd_clipvalue": lambda: tf_keras.optimizers.legacy.SGD(0.05, clipvalue=0.05),
    "legacy_sgd_global_clipnorm": lambda: tf_keras.optimizers.legacy.SGD(0.05, global_clipnorm=0.3),
    "legacy_sgd_gradient_transformers": lambda: tf_keras.optimizers.legacy.SGD(
        0.01, gradient_transformers=[_double_gradients]
    ),
    "legacy_adam_clipnorm": lambda: tf_keras.optimizers.legacy.Adam(0.01, clipnorm=0.3),
    "sgd_clipnorm": lambda: tf_keras.optimizers.SGD(0.05, clipnorm=0.3),
    "sgd_clipvalue": lambda: tf_keras.optimizers.SGD(0.05, clipvalue=0.05),
    "adam_global_clipnorm": lambda: tf_keras.optimizers.Adam(0.01, global_clipnorm=0.3),
}


def _mlp(optimizer):
    tf_keras.utils.set_random_seed(7)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((_FEATURES,)),
            tf_keras.layers.Dense(4, activation="tanh"),
            tf_keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


class ClippingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(optimizer=sorted(_OPTIMIZERS), placement=placements.PLACEMENTS)
    def test_fit_with_transformed_gradients_matches_one_device(self, optimizer, placement):
        x, y = _data()

        def build():
            return _mlp(_OPTIMIZERS[optimizer]())

        reference = build()
        model = keras_testing.in_scope(_strategy(placement), build)
        reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    @parameterized.parameters(
        "legacy_sgd_clipnorm",
        "legacy_sgd_clipvalue",
        "legacy_sgd_global_clipnorm",
        "legacy_sgd_gradient_transformers",
    )
    def test_multi_gpu_model_with_transformed_gradients_matches_one_device(self, optimizer):
        x, y = _data()
        reference = _mlp(_OPTIMIZERS[optimizer]())
        template = _mlp(_OPTIMIZERS[optimizer]())
        parallel = multi_gpu_model(template, gpus=virtual_devices.cpus(2))
        parallel.compile(optimizer=_OPTIMIZERS[optimizer](), loss="mse")
        reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        parallel.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(template, reference), 1e-5)


# How each optimizer class is told not to aggregate.
_NOT_AGGREGATED = {
    "legacy": (
        lambda: tf_keras.optimizers.legacy.SGD(0.1),
        {"experimental_aggregate_gradients": False},
    ),
    "optimizer": (lambda: tf_keras.optimizers.SGD(0.1), {"skip_gradients_aggregation": True}),
}


class AggregationTest(tf.test.TestCase, parameterized.TestCase):
    def _apply(self, placement, kind, gradient_fn, use_function):
        make_optimizer, not_aggregated = _NOT_AGGREGATED[kind]
        strategy = _strategy(placement)
        with strategy.scope():
            variable = tf.Variable([0.0, 0.0])
            optimizer = make_optimizer()

        def step():
            context = tf.distribute.get_replica_context()
            gradient = gradient_fn(context)
            optimizer.apply_gradients([(gradient, variable)], **not_aggregated)

        def optimize():
            strategy.run(step)

        (tf.function(optimize) if use_function else optimize)()
        return variable

    @parameterized.product(
        placement=placements.PLACEMENTS, kind=sorted(_NOT_AGGREGATED), use_function=[True, False]
    )
    def test_each_replicas_own_gradient_raises_and_applies_nothing(
        self, placement, kind, use_function
    ):
        def own_gradient(context):
            return tf.fill([2], tf.cast(context.replica_id_in_sync_group + 1, tf.float32))

        with self.assertRaisesRegex(NotImplementedError, "one copy of each variable"):
            self._apply(placement, kind, own_gradient, use_function)

    @parameterized.product(
        placement=placements.PLACEMENTS, kind=sorted(_NOT_AGGREGATED), use_function=[True, False]
    )
    def test_gradients_the_caller_summed_apply_once(self, placement, kind, use_function):
        def summed_gradient(context):
            own = tf.fill([2], tf.cast(context.replica_id_in_sync_group + 1, tf.float32))
            return context.all_reduce("SUM", own)

        variable = self._apply(placement, kind, summed_gradient, use_function)
        self.assertAllClose(variable.numpy(), [-0.3, -0.3])  # 0.1 * (1 + 2), once.

    def test_one_replica_applies_its_gradient_as_told(self):
        strategy = ReplicaStrategy(["/cpu:1"])
        with strategy.scope():
            variable = tf.Variable([0.0, 0.0])
            optimizer = tf_keras.optimizers.legacy.SGD(0.1)
        strategy.run(
            lambda: optimizer.apply_gradients(
                [(tf.ones([2]), variable)], experimental_aggregate_gradients=False
            )
        )
        self.assertAllClose(variable.numpy(), [-0.1, -0.1])


if __name__ == "__main__":
    tf.test.main()
