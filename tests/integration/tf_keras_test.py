"""tf_keras (legacy Keras 2) under `ReplicaStrategy.scope()` and through `multi_gpu_model`.

tf_keras is imported directly, alongside Keras 3, so no TF_USE_LEGACY_KERAS is needed. The
classes run in the placements of tests/placements.py that apply to them.
"""

import os

import keras_testing
import placements

# isort: split

import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized

from replica_strategy import multi_gpu_model, register_tf_keras

_FEATURES = 3


def _data(rows=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")


def _mlp(*extra_layers, optimizer=None):
    tf_keras.utils.set_random_seed(7)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((_FEATURES,)),
            tf_keras.layers.Dense(4, activation="tanh"),
            *extra_layers,
            tf_keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer or tf_keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


@placements.across_placements()
class TfKerasUnderScopeTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("two_replicas", 2), ("four_replicas", 4))
    def test_fit_evaluate_predict_match_single_device(self, num_replicas):
        x, y = _data()
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(num_replicas), _mlp)
        expected = reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        self.assertAllClose(history, expected, atol=1e-5)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        # Uneven evaluation and prediction batches (7 rows on N replicas) are exact.
        self.assertAllClose(
            model.evaluate(x, y, batch_size=7, verbose=0, return_dict=True),
            reference.evaluate(x, y, batch_size=7, verbose=0, return_dict=True),
            atol=1e-5,
        )
        self.assertAllClose(model.predict(x, batch_size=7, verbose=0), reference(x), atol=1e-5)

    def test_even_split_partial_batch_matches_one_device(self):
        # 43 rows, batch 8 on 2 replicas: the last batch of 3 splits 2, 1. Every row weighs 1/B
        # in fit (MirroredStrategy weighs each replica's mean loss 1/2) and in evaluate.
        x, y = _data(43)
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        expected = reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        self.assertAllClose(history, expected, atol=1e-6)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-6)
        self.assertAllClose(
            model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True),
            reference.evaluate(x, y, batch_size=8, verbose=0, return_dict=True),
            atol=1e-6,
        )

    def test_dataset_validation_and_steps_per_execution_match_single_device(self):
        x, y = _data(40)
        train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(8)
        validation = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(3)
        histories = []
        for strategy in (None, self.replica_strategy(2)):
            model = keras_testing.in_scope(strategy, _mlp)
            keras_testing.in_scope(
                strategy,
                model.compile,
                optimizer=tf_keras.optimizers.SGD(0.05),
                loss="mse",
                metrics=["mae"],
                steps_per_execution=2,
            )
            histories.append(
                model.fit(train, validation_data=validation, epochs=2, verbose=0).history
            )
        self.assertAllClose(histories[1], histories[0], atol=1e-5)

    def test_on_batch_methods_split_and_match_single_device(self):
        x, y = _data(5)  # 3, 2 on two replicas.
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        self.assertAllClose(model.predict_on_batch(x), reference.predict_on_batch(x), atol=1e-5)
        self.assertAllClose(model.test_on_batch(x, y), reference.test_on_batch(x, y), atol=1e-5)
        x, y = _data(6)
        self.assertAllClose(model.train_on_batch(x, y), reference.train_on_batch(x, y), atol=1e-5)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    def test_batch_normalization_matches_mirrored_strategy(self):
        x, y = _data()
        weights = []
        for strategy in (
            self.replica_strategy(2),
            self.mirrored_strategy(2),
        ):
            model = keras_testing.in_scope(strategy, _mlp, tf_keras.layers.BatchNormalization())
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            weights.append(model.get_weights())
        for ours, mirrored in zip(*weights, strict=True):
            self.assertAllClose(ours, mirrored, atol=1e-5)

    def test_clipnorm_matches_single_device(self):
        # tf_keras clips the aggregated gradient, as on one device.
        x, y = _data()

        def build():
            return _mlp(optimizer=tf_keras.optimizers.SGD(0.1, clipnorm=0.05))

        reference = build()
        model = keras_testing.in_scope(self.replica_strategy(2), build)
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    def test_mixed_float16_after_registration(self):
        register_tf_keras()
        register_tf_keras()  # Idempotent.
        x, y = _data()
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
        self.addCleanup(tf_keras.mixed_precision.set_global_policy, "float32")
        # Oracle: MirroredStrategy. Each replica's loss is scaled by 1/N before loss scaling,
        # so whether float16 gradients overflow (and a step is skipped) can differ from one
        # device; it must not differ from MirroredStrategy.
        reference = keras_testing.in_scope(self.mirrored_strategy(2), _mlp)
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        self.assertIsInstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
        # One step: the same update as MirroredStrategy, up to float16 rounding.
        reference.train_on_batch(x[:8], y[:8])
        model.train_on_batch(x[:8], y[:8])
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-3)
        history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0).history
        self.assertTrue(np.all(np.isfinite(history["loss"])))

    def test_backup_and_restore_after_registration(self):
        register_tf_keras()
        x, y = _data()
        backup = os.path.join(self.get_temp_dir(), "backup")
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[
                tf_keras.callbacks.BackupAndRestore(backup),
                tf_keras.callbacks.EarlyStopping(patience=5),
                tf_keras.callbacks.ReduceLROnPlateau(patience=5),
            ],
        )
        self.assertLen(history.history["loss"], 2)

    @parameterized.named_parameters(("h5", "model.h5"), ("saved_model", "saved_model"))
    def test_files_interchange_with_no_strategy(self, filename):
        x, y = _data(16)
        path = os.path.join(self.get_temp_dir(), filename)
        strategy = self.replica_strategy(2)
        for writer, reader in ((strategy, None), (None, strategy)):
            model = keras_testing.in_scope(writer, _mlp)
            model.fit(x, y, batch_size=8, verbose=0)
            keras_testing.in_scope(writer, model.save, path)
            loaded = keras_testing.in_scope(reader, tf_keras.models.load_model, path)
            self.assertLess(keras_testing.max_weight_difference(loaded, model), 1e-7)
            weights_path = os.path.join(self.get_temp_dir(), "weights.h5")
            model.save_weights(weights_path)
            fresh = keras_testing.in_scope(reader, _mlp)
            keras_testing.in_scope(reader, fresh.load_weights, weights_path)
            self.assertLess(keras_testing.max_weight_difference(fresh, model), 1e-7)


# multi_gpu_model has no mirror_weights and keeps the weights on /cpu:0: its placements are
# the "GPUs" apart from that CPU, or the first of them on it.
@placements.across_placements(placements.DEFAULT, placements.PARAMETER_ON_REPLICA)
class TfKerasMultiGpuModelTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_fit_shares_weights_and_matches_single_device(self):
        x, y = _data()
        template, reference = _mlp(), _mlp()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        self.assertIsInstance(parallel, tf_keras.Model)
        parallel.compile(optimizer=tf_keras.optimizers.SGD(0.05), loss="mse")
        differences = []

        class CompareWithTemplate(tf_keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                differences.append(keras_testing.max_weight_difference(template, parallel))

        parallel.fit(
            x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[CompareWithTemplate()]
        )
        reference.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        self.assertEqual(differences, [0.0] * 4)
        self.assertLess(keras_testing.max_weight_difference(template, reference), 1e-5)
        self.assertEqual(parallel.output_names, template.output_names)

    def test_uneven_splits_train_exactly_like_one_device(self):
        # 10 rows on 3 replicas (4, 4, 2) and a last batch of 2 (1, 1, 0): every row weighs 1/B
        # in the gradient, as in the legacy model's loss over the merged batch.
        x, y = _data(32)
        template, reference = _mlp(), _mlp()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(3))
        parallel.compile(optimizer=tf_keras.optimizers.SGD(0.05), loss="mse")
        reference.compile(optimizer=tf_keras.optimizers.SGD(0.05), loss="mse")
        history = parallel.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
        expected = reference.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
        self.assertAllClose(history.history["loss"], expected.history["loss"], atol=1e-5)
        self.assertLess(keras_testing.max_weight_difference(template, reference), 1e-5)

    def test_batch_normalization_statistics_are_shared(self):
        template = _mlp(tf_keras.layers.BatchNormalization())
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(optimizer="sgd", loss="mse")
        parallel.fit(*_data(), batch_size=8, verbose=0)
        self.assertEqual(keras_testing.max_weight_difference(template, parallel), 0.0)
        moving_mean = template.layers[1].moving_mean.numpy()
        self.assertGreater(float(np.abs(moving_mean).max()), 0.0)

    def test_parallel_save_loads_into_plain_model(self):
        x, y = _data()
        parallel = multi_gpu_model(_mlp(), gpus=self.replica_devices(2))
        parallel.compile(optimizer="sgd", loss="mse")
        parallel.fit(x, y, batch_size=8, verbose=0)
        path = os.path.join(self.get_temp_dir(), "parallel.h5")
        parallel.save(path)
        loaded = tf_keras.models.load_model(path)
        self.assertAllClose(loaded.predict(x, verbose=0), parallel.predict(x, verbose=0), atol=1e-6)

    def test_rnn_initial_state_train_on_batch(self):
        tf_keras.utils.set_random_seed(2)
        sequences, state = tf_keras.Input((4, 3)), tf_keras.Input((6,))
        outputs = tf_keras.layers.SimpleRNN(6)(sequences, initial_state=state)
        template = tf_keras.Model([sequences, state], tf_keras.layers.Dense(1)(outputs))
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd")
        rng = np.random.default_rng(3)
        x = [
            rng.normal(size=(6, 4, 3)).astype("float32"),
            rng.normal(size=(6, 6)).astype("float32"),
        ]
        parallel.train_on_batch(x, rng.normal(size=(6, 1)).astype("float32"))
        self.assertAllClose(parallel.predict_on_batch(x), template(x), atol=1e-5)

    def test_cpu_relocation_of_tf_keras_weights_elsewhere_is_refused(self):
        with tf.device("/cpu:3"):
            template = _mlp()
        with self.assertRaisesRegex(ValueError, "without unsharing them"):
            multi_gpu_model(template, gpus=self.replica_devices(2), cpu_relocation=True)


if __name__ == "__main__":
    tf.test.main()
