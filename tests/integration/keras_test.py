"""Keras 3 (`keras` / `tf.keras`) under `with ReplicaStrategy(...).scope():`, on logical CPUs.

Oracles: the same model trained with no strategy, and MirroredStrategy on the same devices.
Every class runs in each placement of tests/placements.py.
"""

import os
import tempfile

import keras_testing
import placements

# isort: split

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from replica_strategy import exact_uneven_batches

_FEATURES = 3


def _data(rows=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1).astype("float32")
    return x, y


def _mlp(*extra_layers, optimizer=None, metrics=("mae",)):
    """A tiny regression model with fixed initial weights (same seed => same weights)."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((_FEATURES,)),
            keras.layers.Dense(4, activation="tanh"),
            *extra_layers,
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.05),
        loss="mse",
        metrics=[keras.metrics.get(metric) for metric in metrics]
        + [keras.metrics.MeanSquaredError(name="mse_metric")],
    )
    return model


# Four replicas in the default placement only: the suite's time budget (mirrored_weights_test runs
# four replicas with mirror_weights).
@placements.across_placements(first_placement_only=("four_replicas", "ten_on_four"))
class KerasFitEvaluatePredictTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    @parameterized.named_parameters(("one_replica", 1), ("two_replicas", 2), ("four_replicas", 4))
    def test_numpy_fit_evaluate_predict_match_single_device(self, num_replicas):
        # Batch 8 splits evenly on 1, 2 and 4 replicas: identical weights, losses and metrics.
        x, y = _data()
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(num_replicas), _mlp)
        expected = reference.fit(x, y, batch_size=8, epochs=2, verbose=0).history
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
        for key in expected:
            self.assertAllClose(history[key], expected[key], atol=1e-5, msg=key)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        self.assertAllClose(
            model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True),
            reference.evaluate(x, y, batch_size=8, verbose=0, return_dict=True),
            atol=1e-5,
        )
        self.assertAllClose(model.predict(x, batch_size=8, verbose=0), reference(x), atol=1e-5)

    def test_dataset_with_validation_and_steps_per_execution_matches_single_device(self):
        x, y = _data(48)
        train = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(8)
        validation = tf.data.Dataset.from_tensor_slices((x[40:], y[40:])).batch(4)
        histories = []
        for strategy in (None, self.replica_strategy(2)):
            model = keras_testing.in_scope(strategy, _mlp)
            model.compile(
                optimizer=keras.optimizers.SGD(0.05),
                loss="mse",
                metrics=["mae"],
                steps_per_execution=2,
            )
            histories.append(
                model.fit(train, validation_data=validation, epochs=2, verbose=0).history
            )
        self.assertEqual(set(histories[0]), {"loss", "mae", "val_loss", "val_mae"})
        for key in histories[0]:
            self.assertAllClose(histories[1][key], histories[0][key], atol=1e-5, msg=key)

    @parameterized.named_parameters(
        ("three_replicas_batch_7", 3, 7),  # 3, 3, 1 and a last batch of 5: 2, 2, 1
        ("four_replicas_batch_10", 4, 10),  # 3, 3, 3, 1 and a last batch of 0 rows: none
        ("two_replicas_batch_1", 2, 1),  # 1, 0: smaller than the number of replicas
    )
    def test_uneven_batches_evaluate_and_predict_exactly(self, num_replicas, batch_size):
        # Reported loss and metrics weigh every row once, whatever the split.
        x, y = _data()
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(num_replicas), _mlp)
        self.assertAllClose(
            model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True),
            reference.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True),
            atol=1e-5,
        )
        # predict returns every row, in the original order.
        self.assertAllClose(
            model.predict(x, batch_size=batch_size, verbose=0), reference(x), atol=1e-5
        )

    def test_uneven_step_reports_exact_loss(self):
        # One step on 10 rows over 3 replicas (4, 4, 2): the loss reported for the step is the
        # loss of the weights before the update, which must equal the single-device loss.
        x, y = _data(10)
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(3), _mlp)
        expected = reference.train_on_batch(x, y, return_dict=True)
        self.assertAllClose(model.train_on_batch(x, y, return_dict=True), expected, atol=1e-5)

    def test_even_split_partial_batch_trains_like_one_device(self):
        # 43 rows, batch 8 on 2 replicas: the last batch of 3 splits 2, 1. Every row weighs
        # 1/B by default (MirroredStrategy weighs each replica's mean loss 1/2: it differs).
        x, y = _data(43)
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        mirrored = keras_testing.in_scope(self.mirrored_strategy(2), _mlp)
        expected = reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        mirrored.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        self.assertAllClose(history.history, expected.history, atol=1e-6)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-6)
        self.assertGreater(keras_testing.max_weight_difference(mirrored, reference), 1e-5)
        # evaluate's loss and metrics on a partial last batch (3 of 43 again): one device's.
        self.assertAllClose(
            model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True),
            reference.evaluate(x, y, batch_size=8, verbose=0, return_dict=True),
            atol=1e-6,
        )

    @parameterized.named_parameters(("ten_on_three", 3, 10), ("ten_on_four", 4, 10))
    def test_exact_uneven_batches_trains_like_one_device(self, num_replicas, batch_size):
        # The default, and the opt-in still works (idempotent): 1/B per row, however it splits.
        x, y = _data(40)
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(num_replicas), _mlp)
        exact_uneven_batches(exact_uneven_batches(model))  # Idempotent.
        expected = reference.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
        history = model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
        self.assertAllClose(history.history["loss"], expected.history["loss"], atol=1e-5)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    @placements.default_placement_only  # No ReplicaStrategy here.
    def test_exact_uneven_batches_rejects_other_strategies(self):
        with self.assertRaisesRegex(ValueError, "under MirroredStrategy"):
            exact_uneven_batches(keras_testing.in_scope(self.mirrored_strategy(2), _mlp))

    def test_on_batch_methods_match_single_device(self):
        # Keras 3 gives *_on_batch data to strategy.run undistributed, under every strategy:
        # each replica runs the whole batch, so losses and updates equal one device's, and
        # predict_on_batch returns the batch once per replica, exactly as MirroredStrategy.
        # (multi_gpu_model's models split these batches: see multi_gpu_shim_test.)
        x, y = _data(5)
        reference = _mlp()
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        mirrored = keras_testing.in_scope(self.mirrored_strategy(2), _mlp)
        self.assertAllClose(
            model.test_on_batch(x, y, return_dict=True),
            reference.test_on_batch(x, y, return_dict=True),
            atol=1e-5,
        )
        self.assertAllClose(
            model.train_on_batch(x, y, return_dict=True),
            reference.train_on_batch(x, y, return_dict=True),
            atol=1e-5,
        )
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)
        mirrored.set_weights(model.get_weights())
        self.assertAllClose(model.predict_on_batch(x), mirrored.predict_on_batch(x), atol=1e-5)
        self.assertAllClose(model.predict_on_batch(x)[:5], reference.predict_on_batch(x), atol=1e-5)


@placements.across_placements()
class KerasStatefulLayersTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    def test_batch_normalization_matches_mirrored_strategy(self):
        # Per-replica batch statistics, moving averages updated once per step.
        x, y = _data(32)
        weights = []
        for strategy in (
            self.replica_strategy(2),
            self.mirrored_strategy(2),
        ):
            model = keras_testing.in_scope(strategy, _mlp, keras.layers.BatchNormalization())
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            weights.append(model.get_weights())
        for ours, mirrored in zip(*weights, strict=True):
            self.assertAllClose(ours, mirrored, atol=1e-5)

    def test_synchronized_batch_normalization_matches_single_device(self):
        # Synchronized statistics are the global batch's: the run equals one device's.
        x, y = _data(32)
        reference = _mlp(keras.layers.BatchNormalization(synchronized=True))
        model = keras_testing.in_scope(
            self.replica_strategy(2),
            _mlp,
            keras.layers.BatchNormalization(synchronized=True),
        )
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    def test_dropout_trains_and_is_off_in_inference(self):
        x, y = _data(32)
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp, keras.layers.Dropout(0.5))
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
        self.assertTrue(np.all(np.isfinite(history["loss"])))
        self.assertAllClose(model.predict(x, batch_size=8, verbose=0), model(x), atol=1e-5)

    def test_recurrent_model_matches_single_device(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16, 5, 2)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")

        def build():
            keras.utils.set_random_seed(3)
            model = keras.Sequential(
                [keras.Input((5, 2)), keras.layers.LSTM(3), keras.layers.Dense(1)]
            )
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            return model

        reference = build()
        model = keras_testing.in_scope(self.replica_strategy(2), build)
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    def test_mixed_float16_matches_mirrored_strategy(self):
        # The LossScaleOptimizer writes its counters inside tf.cond in replica context; the loss
        # scale state, the skipped steps and the weights follow MirroredStrategy exactly.
        x, y = _data(32)
        keras.mixed_precision.set_global_policy("mixed_float16")
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")
        reference = keras_testing.in_scope(self.mirrored_strategy(2), _mlp)
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        expected = reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertAllClose(history.history["loss"], expected.history["loss"], atol=1e-6)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-6)
        for ours, theirs in zip(model.optimizer.variables, reference.optimizer.variables):
            self.assertAllClose(ours, theirs)

    @parameterized.named_parameters(
        ("clipnorm", {"clipnorm": 0.05}),
        ("global_clipnorm", {"global_clipnorm": 0.05}),
        ("clipvalue", {"clipvalue": 0.01}),
    )
    def test_gradient_clipping_matches_single_device(self, options):
        # Keras 3 clips each replica's (1/N-scaled) gradient before the sum, under every
        # strategy; ReplicaStrategy clips the sum instead (`_keras3_optimizer`): one device's
        # weights. MirroredStrategy's differ (docs/numerics.md gives by how much).
        x, y = _data(32)
        weights = {}
        for name, strategy in (
            ("one_device", None),
            ("replica", self.replica_strategy(2)),
            ("mirrored", self.mirrored_strategy(2)),
        ):
            model = keras_testing.in_scope(
                strategy, _mlp, optimizer=keras.optimizers.SGD(0.1, **options)
            )
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            weights[name] = model.get_weights()
        for ours, one_device in zip(weights["replica"], weights["one_device"], strict=True):
            self.assertAllClose(ours, one_device, atol=1e-6)
        self.assertGreater(
            max(
                float(np.abs(mirrored - one_device).max())
                for mirrored, one_device in zip(
                    weights["mirrored"], weights["one_device"], strict=True
                )
            ),
            1e-4,
        )

    def test_weight_regularization_matches_single_device(self):
        # The penalty's gradient is counted once, not once per replica.
        x, y = _data(32)

        def build():
            keras.utils.set_random_seed(3)
            model = keras.Sequential(
                [
                    keras.Input((_FEATURES,)),
                    keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(1.0)),
                ]
            )
            model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
            return model

        reference = build()
        model = keras_testing.in_scope(self.replica_strategy(4), build)
        reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-5)

    def test_gradient_accumulation_fails_as_under_mirrored_strategy(self):
        # A known Keras 3 limit (README): the optimizer all-reduces inside a `cond` branch, which
        # tf.distribute forbids, under MirroredStrategy too. This test notices when Keras fixes it.
        x, y = _data(32)
        for strategy in (
            self.replica_strategy(2),
            self.mirrored_strategy(2),
        ):
            with strategy.scope():
                model = _mlp()
                model.compile(
                    optimizer=keras.optimizers.SGD(0.05, gradient_accumulation_steps=2), loss="mse"
                )
            with self.assertRaisesRegex(Exception, "merge_call"):
                model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@placements.across_placements()
class KerasCallbacksTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_callbacks_run_and_write_loadable_files(self):
        x, y = _data(32)
        directory = self.get_temp_dir()
        checkpoint = os.path.join(directory, "best.keras")
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            validation_split=0.25,
            verbose=0,
            callbacks=[
                keras.callbacks.ModelCheckpoint(checkpoint, save_best_only=True),
                keras.callbacks.BackupAndRestore(os.path.join(directory, "backup")),
                keras.callbacks.EarlyStopping(patience=1, min_delta=1e9),
                keras.callbacks.ReduceLROnPlateau(patience=0, min_delta=1e9, factor=0.5),
            ],
        )
        # EarlyStopping (nothing improves by 1e9) stops after patience + 1 epochs.
        self.assertLen(history.history["loss"], 2)
        self.assertLess(float(model.optimizer.learning_rate), 0.05)
        restored = keras.models.load_model(checkpoint)
        self.assertAllClose(restored.predict(x, verbose=0).shape, (32, 1))

    def test_tensorboard_writes_logs(self):
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            self.skipTest("TensorBoard is not installed (tf.summary needs it).")
        x, y = _data(16)
        logs = os.path.join(self.get_temp_dir(), "logs")
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[keras.callbacks.TensorBoard(logs)])
        self.assertNotEmpty(tf.io.gfile.listdir(logs))

    def test_backup_and_restore_resumes_interrupted_training(self):
        x, y = _data(32)
        backup = os.path.join(self.get_temp_dir(), "backup")

        class InterruptAtEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:
                    raise RuntimeError("interrupted")

        strategy = self.replica_strategy(2)
        model = keras_testing.in_scope(strategy, _mlp)
        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            model.fit(
                x,
                y,
                batch_size=8,
                epochs=2,
                verbose=0,
                callbacks=[keras.callbacks.BackupAndRestore(backup), InterruptAtEpoch()],
            )
        resumed = keras_testing.in_scope(strategy, _mlp)
        # Restoring assigns variables: in the scope for now (test_load_weights_outside_scope).
        history = keras_testing.in_scope(
            strategy,
            resumed.fit,
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup)],
        )
        self.assertLen(history.history["loss"], 1)  # Only the epoch not yet done.
        self.assertEqual(int(resumed.optimizer.iterations), 8)


@placements.across_placements()
class KerasSavingTest(placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("keras_format", "model.keras"), ("h5", "model.h5"), ("weights", "model.weights.h5")
    )
    def test_files_interchange_with_no_strategy(self, filename):
        # Written under the strategy, read without one; and the other way round.
        x, y = _data(16)
        path = os.path.join(self.get_temp_dir(), filename)
        strategy = self.replica_strategy(2)
        for writer, reader in ((strategy, None), (None, strategy)):
            model = keras_testing.in_scope(writer, _mlp)
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)
            if filename.endswith(".weights.h5"):
                model.save_weights(path)
                loaded = keras_testing.in_scope(reader, _mlp)
                keras_testing.in_scope(reader, loaded.load_weights, path)
            else:
                model.save(path)
                # compile=False: Keras cannot read back the compiled metrics of an .h5 file
                # (with or without a strategy).
                loaded = keras_testing.in_scope(
                    reader, keras.models.load_model, path, compile=False
                )
            self.assertLess(keras_testing.max_weight_difference(loaded, model), 1e-7)
            self.assertAllClose(loaded.predict(x, verbose=0), model(x), atol=1e-6)

    def test_load_weights_outside_scope(self):
        path = os.path.join(self.get_temp_dir(), "outside.weights.h5")
        _mlp().save_weights(path)
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        model.load_weights(path)

    def test_export_saved_model_loads_without_strategy(self):
        x, _ = _data(16)
        model = keras_testing.in_scope(self.replica_strategy(2), _mlp)
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "exported")
        model.export(path, verbose=False)
        restored = tf.saved_model.load(path)
        self.assertAllClose(restored.serve(x), model(x), atol=1e-6)


if __name__ == "__main__":
    tf.test.main()
