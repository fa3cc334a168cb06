"""keras/src/backend/tensorflow/distribute_test.py on ReplicaStrategy.

Four cases adapted, below, where upstream asserts MirroredStrategy's variables (a
MirroredVariable, one copy per replica); the others run as upstream wrote them.
"""

import keras_adapter  # First: tests/ on sys.path, logical CPUs.

# isort: split

import keras
import tensorflow as tf
from keras.src import backend, layers, models
from tensorflow.python.distribute import values as tf_values

from replica_strategy._variables import ParameterVariable

import placements

upstream = keras_adapter.load("src/backend/tensorflow/distribute_test.py")


@placements.across_placements()
class DistributeTest(keras_adapter.PlacementCase, upstream.DistributeTest):
    def test_variable_creation(self):
        # ReplicaStrategy: only mirror_weights=True keeps a copy per replica; its variables are
        # MirroredWeights, a subclass of MirroredVariable (upstream asserts the class name).
        if self.placement != placements.MIRROR_WEIGHTS:
            self.skipTest(
                "Out of scope: asserts MirroredStrategy's variables (MirroredVariable, one copy "
                "per replica); ReplicaStrategy keeps one copy of each variable."
            )
        strategy = self.replica_strategy(2)
        with strategy.scope():
            dense = layers.Dense(2)
            dense.build([4, 2])

        self.assertIsInstance(dense.kernel, backend.Variable)
        self.assertIsInstance(dense.kernel.value, tf.distribute.DistributedValues)
        self.assertIsInstance(dense.kernel.value, tf_values.MirroredVariable)

        self.assertIsInstance(dense.kernel, backend.Variable)
        self.assertIsInstance(dense.bias.value, tf.distribute.DistributedValues)
        self.assertIsInstance(dense.bias.value, tf_values.MirroredVariable)

    def test_strategy_run(self):
        strategy = self.replica_strategy(2)

        with strategy.scope():
            inputs = layers.Input(shape=[4])
            dense = layers.Dense(2)
            output = dense(inputs)
            model = models.Functional(inputs, output)

        self.assertIsInstance(dense.kernel, backend.Variable)
        # ReplicaStrategy: upstream asserts a DistributedValues (MirroredVariable) here, as
        # mirror_weights=True gives; otherwise the kernel is one ParameterVariable.
        if self.placement == placements.MIRROR_WEIGHTS:
            self.assertIsInstance(dense.kernel.value, tf.distribute.DistributedValues)
        else:
            self.assertIsInstance(dense.kernel.value, ParameterVariable)

        def input_fn(ctx):
            if ctx.replica_id_in_sync_group == 1:
                return tf.ones([8, 4])
            else:
                return tf.zeros([8, 4])

        distributed_inputs = strategy.experimental_distribute_values_from_function(input_fn)

        @tf.function
        def run_fn(data):
            return model(data)

        result = strategy.run(run_fn, args=(distributed_inputs,))

        self.assertIsInstance(result, tf.types.experimental.distributed.PerReplica)
        self.assertLen(result.values, 2)
        self.assertEqual(result.values[0].shape, [8, 2])
        self.assertEqual(result.values[1].shape, [8, 2])
        self.assertNotAllClose(result.values[0], result.values[1])
        self.assertAllClose(result.values[0], tf.zeros([8, 2]))

    def test_seed_generator(self):
        strategy = self.replica_strategy(2)
        with strategy.scope():
            seed_generator = keras.random.SeedGenerator(42)
            # ReplicaStrategy: upstream reads `.values`, a MirroredVariable's copies; one copy
            # has one local result.
            states = strategy.experimental_local_results(
                strategy.run(lambda: seed_generator.state.value)
            )
            for s in states:
                self.assertAllClose(keras.ops.convert_to_numpy(s), (42, 0))

    def test_correctness_with_fit_and_regularizer(self):
        strategy = self.replica_strategy(2)

        batch_size = 12
        x = keras.ops.ones((batch_size, 1))
        y = keras.ops.zeros((batch_size, 1))

        def model_and_layer():
            inputs = layers.Input(shape=(1,))
            layer = layers.Dense(
                1,
                use_bias=False,
                kernel_initializer=keras.initializers.Constant(1),
                kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.01),
            )
            model = models.Model(inputs, layer(inputs))
            model.compile(loss="mse", optimizer="sgd")
            return model, layer

        # Runs without a strategy to get expected weights.
        model, layer = model_and_layer()
        history = model.fit(x, y, batch_size=batch_size, epochs=1)
        expected_loss = history.history["loss"]
        expected_weights = keras.ops.convert_to_numpy(layer.kernel)

        with strategy.scope():
            model, layer = model_and_layer()
            history = model.fit(x, y, batch_size=batch_size, epochs=1)
            # ReplicaStrategy: upstream reads `.values`, a MirroredVariable's copies; one copy
            # has one local result.
            weights = strategy.experimental_local_results(strategy.run(lambda: layer.kernel.value))

            self.assertAllClose(history.history["loss"], expected_loss)
            for w in weights:
                self.assertAllClose(keras.ops.convert_to_numpy(w), expected_weights)


if __name__ == "__main__":
    tf.test.main()
