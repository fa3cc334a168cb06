"""`multi_gpu_model` with Keras 3 models, on logical CPUs: the legacy suite and its users' needs.

The classes run in the "default" and "parameter_on_replica" placements of tests/placements.py
(multi_gpu_model has no mirror_weights); tests whose devices are written out run once.
"""

import os

import placements
import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorflow.python.distribute import ps_values

from replica_strategy import ReplicaStrategy, multi_gpu_model

# multi_gpu_model has no mirror_weights and keeps the weights on /cpu:0: its placements are
# the "GPUs" apart from that CPU, or the first of them on it.
_PLACEMENTS = placements.across_placements(placements.DEFAULT, placements.PARAMETER_ON_REPLICA)


def _sequential(seed=5):
    """Legacy case 1, smaller: Dense(10) -> Dense(1)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(1)]
    )


def _two_inputs_two_outputs():
    """Legacy case 2: inputs (10,) and (5,), outputs Dense(1) and Dense(2)."""
    keras.utils.set_random_seed(5)
    first, second = keras.Input((10,), name="input_a"), keras.Input((5,), name="input_b")
    merged = keras.layers.Concatenate()([first, second])
    return keras.Model(
        [first, second],
        [keras.layers.Dense(1, name="out_a")(merged), keras.layers.Dense(2, name="out_b")(merged)],
    )


def _regression_data(rows=32, features=10, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(rows, features)).astype("float32"),
        rng.normal(size=(rows, outputs)).astype("float32"),
    )


def _assert_same_weights(test, first, second, atol=1e-6):
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        test.assertAllClose(a, b, atol=atol)


@_PLACEMENTS
class MultiGpuModelLegacySuiteTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    @parameterized.named_parameters(
        ("two_devices", ["/cpu:0", "/cpu:1"]),
        ("non_contiguous", ["/cpu:1", "/cpu:3"]),
        ("four_devices", virtual_devices.cpus(4)),
    )
    @placements.default_placement_only  # Its devices are written out.
    def test_sequential_fit_matches_single_device(self, gpus):
        # Legacy case 1, plus a differential check: same data, same initial weights, even
        # splits => the same trained weights as the template trained alone.
        x, y = _regression_data()
        template, reference = _sequential(), _sequential()
        parallel = multi_gpu_model(template, gpus=gpus)
        parallel.compile(loss="mse", optimizer="rmsprop")
        reference.compile(loss="mse", optimizer="rmsprop")
        history = parallel.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        expected = reference.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        self.assertAllClose(history.history["loss"], expected.history["loss"], atol=1e-5)
        _assert_same_weights(self, template, reference, atol=1e-5)
        self.assertLen(parallel.distribute_strategy.extended.worker_devices, len(gpus))

    @parameterized.named_parameters(
        ("ten_on_three", 3, 10),  # 4, 4, 2 rows.
        ("ten_on_four", 4, 10),  # 3, 3, 3, 1 rows.
        ("last_partial_batch", 4, 12),  # 12, 12, then 8 rows: 3, 3, 2, 0 -- an empty replica.
    )
    def test_uneven_splits_train_exactly_like_one_device(self, num_devices, batch_size):
        # As the legacy model (one loss over the concatenated batch): every row weighs 1/B in
        # the gradient, however unevenly the batch splits.
        x, y = _regression_data(rows=32)
        template, reference = _sequential(), _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(num_devices))
        parallel.compile(loss="mse", optimizer=keras.optimizers.SGD(0.05))
        reference.compile(loss="mse", optimizer=keras.optimizers.SGD(0.05))
        history = parallel.fit(x, y, epochs=2, batch_size=batch_size, shuffle=False, verbose=0)
        expected = reference.fit(x, y, epochs=2, batch_size=batch_size, shuffle=False, verbose=0)
        self.assertAllClose(history.history["loss"], expected.history["loss"], atol=1e-5)
        _assert_same_weights(self, template, reference, atol=1e-5)

    def test_optimizer_created_outside_the_scope_is_accepted(self):
        # Legacy code builds its optimizer object before `compile`, outside any strategy.
        x, y = _regression_data()
        template, reference = _sequential(), _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
        reference.compile(loss="mse", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
        parallel.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        reference.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        self.assertAllClose(float(parallel.optimizer.learning_rate), 0.01)
        _assert_same_weights(self, template, reference, atol=1e-5)

    def test_two_inputs_two_outputs_keep_names(self):
        # Legacy case 2.
        template = _two_inputs_two_outputs()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        self.assertEqual(parallel.output_names, ["out_a", "out_b"])
        self.assertEqual([tensor.name for tensor in parallel.inputs], ["input_a", "input_b"])
        parallel.compile(loss="mse", optimizer="sgd")
        x_a, y_a = _regression_data(seed=1)
        x_b, y_b = _regression_data(features=5, outputs=2, seed=2)
        parallel.fit([x_a, x_b], [y_a, y_b], batch_size=8, epochs=1, verbose=0)
        outputs = parallel.predict([x_a, x_b], batch_size=6, verbose=0)
        expected = template([x_a, x_b])
        self.assertAllClose(outputs[0], expected[0], atol=1e-5)
        self.assertAllClose(outputs[1], expected[1], atol=1e-5)

    @parameterized.named_parameters(
        ("one_gpu", 1, "gpus >= 2"),
        ("zero_gpus", 0, "gpus >= 2"),
        ("list_of_one", [0], "len\\(gpus\\) >= 2"),
        ("one_device_name", ["/cpu:0"], "len\\(gpus\\) >= 2"),
        ("more_gpus_than_available", 2, "we expect the following devices to be available"),
        ("missing_gpu_ids", [0, 2], "However this machine only has"),
        ("missing_cpu", ["/cpu:0", "/cpu:9"], "Try reducing `gpus`"),
        ("no_gpu_at_all", None, "This machine has no GPU"),
        ("wrong_type", "2", "must be an int >= 2"),
    )
    @placements.default_placement_only  # Its devices are written out.
    def test_bad_gpus_raise_legacy_errors(self, gpus, message):
        # Legacy case 3. This machine has no GPU: every GPU id is missing.
        with self.assertRaisesRegex(ValueError, message):
            multi_gpu_model(_sequential(), gpus=gpus)

    @parameterized.named_parameters(
        ("too_many_gpus", 2, "Try reducing `gpus`"),
        ("one_gpu", 1, "gpus >= 2"),
    )
    @placements.default_placement_only  # Its devices are written out.
    def test_without_gpus_the_error_names_logical_cpus_to_pass(self, gpus, message):
        # "Try reducing `gpus`" alone would lead to gpus=1, refused in turn.
        with self.assertRaisesRegex(
            ValueError, message + r".*no GPU, and \d+ logical CPUs.*gpus=\['/cpu:0', '/cpu:1'\]"
        ):
            multi_gpu_model(_sequential(), gpus=gpus)

    @placements.default_placement_only  # Its devices are written out.
    def test_missing_devices_error_lists_expected_and_available(self):
        with self.assertRaisesRegex(ValueError, r"GPU:0.*GPU:1.*only has: \[.*CPU:0"):
            multi_gpu_model(_sequential(), gpus=2)

    def test_h5_round_trip_after_fit(self):
        # Legacy case 4: fit, predict, save, clear session, load, predict again.
        x, y = _regression_data()
        path = os.path.join(self.get_temp_dir(), "parallel.h5")
        parallel = multi_gpu_model(_sequential(), gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="rmsprop")
        parallel.fit(x, y, epochs=1, batch_size=8, verbose=0)
        before = parallel.predict(x, verbose=0)
        parallel.save(path)
        keras.backend.clear_session()
        loaded = keras.models.load_model(path, compile=False)
        self.assertAllClose(loaded.predict(x, verbose=0), before, atol=1e-5)

    def test_rnn_initial_state_is_split_with_the_batch(self):
        # Legacy case 5: the state is a model input, split like the sequences.
        keras.utils.set_random_seed(2)
        sequences, state = keras.Input((4, 3)), keras.Input((6,))
        outputs = keras.layers.SimpleRNN(6)(sequences, initial_state=state)
        template = keras.Model([sequences, state], keras.layers.Dense(1)(outputs))
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd")
        rng = np.random.default_rng(3)
        x = [
            rng.normal(size=(6, 4, 3)).astype("float32"),
            rng.normal(size=(6, 6)).astype("float32"),
        ]
        y = rng.normal(size=(6, 1)).astype("float32")
        parallel.train_on_batch(x, y)
        # Row i's output depends on row i's state: equal to the template only if split alike.
        self.assertAllClose(parallel.predict_on_batch(x), template(x), atol=1e-5)

    def test_siamese_model_keeps_output_names(self):
        # Legacy case 6: one nested model applied to two inputs. Keras 3 itself names both
        # nested outputs "nested" (legacy Keras made them unique); the parallel model keeps the
        # template's names, and trains with one loss per output.
        keras.utils.set_random_seed(4)
        shared = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="nested")
        left, right = keras.Input((3,)), keras.Input((3,))
        left_out, right_out = shared(left), shared(right)
        template = keras.Model(
            [left, right],
            [keras.layers.Add(name="add")([left_out, right_out]), left_out, right_out],
        )
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        self.assertEqual(parallel.output_names, template.output_names)
        x = [np.ones((4, 3), "float32"), np.zeros((4, 3), "float32")]
        parallel.compile(loss=["mse", "mse", "mse"], optimizer="sgd")
        parallel.fit(x, [np.zeros((4, 2), "float32")] * 3, batch_size=4, verbose=0)
        for got, expected in zip(parallel.predict(x, verbose=0), template(x), strict=True):
            self.assertAllClose(got, expected, atol=1e-6)

    def test_fit_from_dataset(self):
        # Legacy case 7.
        x, y = _regression_data(36)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # Last batch: 4 rows.
        template, reference = _sequential(), _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd", metrics=["mae"])
        reference.compile(loss="mse", optimizer="sgd", metrics=["mae"])
        history = parallel.fit(dataset, epochs=1, verbose=0).history
        expected = reference.fit(dataset, epochs=1, verbose=0).history
        self.assertAllClose(history, expected, atol=1e-5)


@_PLACEMENTS
class MultiGpuModelWeightSharingTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_template_holds_trained_weights_after_every_batch(self):
        template = _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd")
        initial = template.get_weights()
        test = self
        differences = []

        class CompareWithTemplate(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                differences.append(
                    max(
                        float(np.abs(a - b).max())
                        for a, b in zip(template.get_weights(), parallel.get_weights(), strict=True)
                    )
                )

        x, y = _regression_data()
        parallel.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[CompareWithTemplate()])
        test.assertEqual(differences, [0.0] * 4)
        self.assertGreater(
            max(np.abs(a - b).max() for a, b in zip(initial, template.get_weights(), strict=True)),
            0,
        )

    def test_template_keeps_plain_variables_and_saves(self):
        x, y = _regression_data()
        template = _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd")
        parallel.fit(x, y, batch_size=8, verbose=0)
        path = os.path.join(self.get_temp_dir(), "template.keras")
        template.save(path)
        self.assertAllClose(
            keras.models.load_model(path)(x), parallel.predict(x, verbose=0), atol=1e-5
        )
        # The template's own variables stay plain; only the parallel model wraps them.
        self.assertFalse(
            any(isinstance(w.value, ps_values.AggregatingVariable) for w in template.weights)
        )
        self.assertTrue(
            all(isinstance(w.value, ps_values.AggregatingVariable) for w in parallel.weights)
        )

    def test_cpu_relocation_moves_weights_without_reinitialising_or_unsharing(self):
        with tf.device("/cpu:3"):
            template = _sequential()
        initial = template.get_weights()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2), cpu_relocation=True)
        _assert_same_weights(self, template, parallel)
        for a, b in zip(initial, template.get_weights(), strict=True):
            self.assertAllEqual(a, b)
        self.assertTrue(all(w.value.device.endswith("CPU:0") for w in template.weights))
        parallel.compile(loss="mse", optimizer="sgd")
        parallel.fit(*_regression_data(), batch_size=8, verbose=0)
        _assert_same_weights(self, template, parallel, atol=0)

    @placements.default_placement_only  # Its devices are written out.
    def test_cpu_merge_false_merges_on_first_replica(self):
        parallel = multi_gpu_model(_sequential(), gpus=["/cpu:2", "/cpu:3"], cpu_merge=False)
        self.assertEqual(parallel.distribute_strategy.merge_device, "/device:CPU:2")
        merged_on_cpu = multi_gpu_model(_sequential(), gpus=["/cpu:2", "/cpu:3"])
        self.assertEqual(merged_on_cpu.distribute_strategy.merge_device, "/device:CPU:0")


@_PLACEMENTS
class MultiGpuModelSavingTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_parallel_save_and_checkpoint_load_into_plain_model(self):
        x, y = _regression_data()
        directory = self.get_temp_dir()
        parallel = multi_gpu_model(_sequential(), gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd")
        checkpoint = os.path.join(directory, "checkpoint.weights.h5")
        parallel.fit(
            x,
            y,
            batch_size=8,
            verbose=0,
            callbacks=[keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True)],
        )
        plain = _sequential(seed=99)
        plain.load_weights(checkpoint)
        _assert_same_weights(self, plain, parallel)
        path = os.path.join(directory, "parallel.keras")
        parallel.save(path)
        loaded = keras.models.load_model(path)
        _assert_same_weights(self, loaded, parallel)
        self.assertIsNot(loaded.distribute_strategy, parallel.distribute_strategy)


@_PLACEMENTS
class MultiGpuModelBatchesTest(
    placements.PlacementTestCase, tf.test.TestCase, parameterized.TestCase
):
    @parameterized.named_parameters(
        ("batch_one", 1), ("smaller_than_replicas", 2), ("uneven", 7), ("whole", 32)
    )
    def test_predict_returns_every_row_in_order(self, batch_size):
        template = _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(3))
        x, _ = _regression_data()
        self.assertAllClose(
            parallel.predict(x, batch_size=batch_size, verbose=0), template(x), atol=1e-5
        )

    def test_on_batch_methods_split_the_batch(self):
        # 5 rows on 2 replicas: 3, 2. predict_on_batch returns 5 rows, not 5 per replica.
        template, reference = _sequential(), _sequential()
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        parallel.compile(loss="mse", optimizer="sgd", metrics=["mae"])
        reference.compile(loss="mse", optimizer="sgd", metrics=["mae"])
        x, y = _regression_data(5)
        self.assertAllClose(parallel.predict_on_batch(x), template(x), atol=1e-5)
        self.assertAllClose(parallel.test_on_batch(x, y), reference.test_on_batch(x, y), atol=1e-5)
        x, y = _regression_data(6)
        self.assertAllClose(
            parallel.train_on_batch(x, y), reference.train_on_batch(x, y), atol=1e-5
        )
        _assert_same_weights(self, template, reference, atol=1e-5)


@_PLACEMENTS
class MultiGpuModelKindsTest(placements.PlacementTestCase, tf.test.TestCase):
    def test_subclassed_model(self):
        @keras.saving.register_keras_serializable("keras_compat_test")
        class TwoLayers(keras.Model):
            def __init__(self, units=3, **kwargs):
                super().__init__(**kwargs)
                self.units = units
                self.hidden = keras.layers.Dense(units, activation="relu")
                self.out = keras.layers.Dense(1)

            def call(self, inputs):
                return self.out(self.hidden(inputs))

            def get_config(self):
                return {**super().get_config(), "units": self.units}

        keras.utils.set_random_seed(6)
        template = TwoLayers()
        x, y = _regression_data(16)
        template(x[:1])
        parallel = multi_gpu_model(template, gpus=self.replica_devices(2))
        self.assertAllClose(parallel.predict(x, verbose=0), template(x), atol=1e-6)
        parallel.compile(loss="mse", optimizer="sgd")
        parallel.fit(x, y, batch_size=8, verbose=0)
        _assert_same_weights(self, template, parallel, atol=0)

    def test_stateful_rnn_is_rejected_by_name(self):
        template = keras.Sequential(
            [keras.Input((4, 2), batch_size=4), keras.layers.LSTM(2, stateful=True, name="memory")]
        )
        with self.assertRaisesRegex(ValueError, "stateful layer 'memory'"):
            multi_gpu_model(template, gpus=self.replica_devices(2))

    def test_output_without_batch_axis_is_rejected_by_name(self):
        inputs = keras.Input((3,))
        total = keras.layers.Lambda(lambda t: keras.ops.sum(t), name="total")(inputs)
        template = keras.Model(inputs, [keras.layers.Dense(1, name="per_row")(inputs), total])
        with self.assertRaisesRegex(ValueError, "cannot merge output 'total'"):
            multi_gpu_model(template, gpus=self.replica_devices(2))

    def test_seed_example_runs_as_written(self):
        # The example of the legacy `multi_gpu_model` docstring (Keras 2.3.1,
        # keras/utils/multi_gpu_utils.py), with a smaller model and logical CPUs.
        num_samples, height, width, num_classes = 32, 8, 8, 5
        with tf.device("/cpu:0"):
            model = keras.Sequential(
                [
                    keras.Input((height, width, 3)),
                    keras.layers.Conv2D(4, 3),
                    keras.layers.GlobalAveragePooling2D(),
                    keras.layers.Dense(num_classes, activation="softmax"),
                ]
            )
        parallel_model = multi_gpu_model(model, gpus=self.replica_devices(2))
        parallel_model.compile(loss="categorical_crossentropy", optimizer="rmsprop")
        x = np.random.random((num_samples, height, width, 3))
        y = np.random.random((num_samples, num_classes))
        parallel_model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        path = os.path.join(self.get_temp_dir(), "my_model.h5")
        model.save(path)
        self.assertAllClose(
            keras.models.load_model(path).predict(x, verbose=0),
            parallel_model.predict(x, verbose=0),
            atol=1e-5,
        )

    def test_strategy_is_a_replica_strategy(self):
        parallel = multi_gpu_model(_sequential(), gpus=self.replica_devices(2))
        self.assertIsInstance(parallel.distribute_strategy, ReplicaStrategy)


if __name__ == "__main__":
    tf.test.main()
