"""Tests of the example trainers: flags, strategies, accuracy on held-out digits."""

import contextlib
import io
import json
import os

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import fresh_keras_process
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver, parameterized

import replica_strategy
from examples import (
    describe,
    legacy_multi_gpu_model,
    local_devices,
    train_custom_loop,
    train_keras,
    trainer_flags,
)

_TINY = {"num_samples": 32, "hidden_units": 4, "batch_size": 8, "epochs": 1, "verbose": 0}


class FlagsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("batch_size", "--batch_size=0", "--batch_size"),
        ("epochs", "--epochs=-1", "--epochs"),
        ("hidden_units", "--hidden_units=0", "--hidden_units"),
        ("image_size", "--image_size=2", "--image_size"),
        ("learning_rate", "--learning_rate=0", "--learning_rate"),
        ("learning_rate_nan", "--learning_rate=nan", "--learning_rate"),
        ("seed_negative", "--seed=-1", "--seed"),
        ("num_samples_zero", "--num_samples=0", "--num_samples"),
        ("num_samples_more_than_digits", "--num_samples=5000", "--num_samples"),
        ("strategy", "--strategy=tpu", "--strategy"),
        ("dataset", "--dataset=mnist", "--dataset"),
        ("devices_empty_entry", "--devices=/cpu:0,,/cpu:1", "--devices"),
        ("devices_zero", "--devices=0", "--devices"),
        ("devices_mixed", "--devices=0,/cpu:1", "--devices"),
        ("split_unknown_word", "--split=fast", "--split=fast"),
        ("split_zero_weight", "--split=1,0", "--split=1,0"),
        ("split_negative_weight", "--split=3,-1", "--split=3,-1"),
        ("split_nan_weight", "--split=nan,1", "--split=nan,1"),
        ("split_inf_weight", "--split=inf,1", "--split=inf,1"),
        ("split_empty_entry", "--split=3,,1", "--split=3,,1"),
        ("split_empty", "--split=", "--split="),
    )
    def test_bad_flag_value_is_rejected_when_parsed(self, argument, flag_name):
        # absl checks each value as it parses the command line: app.run turns this error into
        # a usage message and exit status 1 before main runs (see trainer_flags_test).
        with flagsaver.flagsaver():
            with self.assertRaisesRegex(flags.IllegalFlagValueError, flag_name):
                flags.FLAGS(["train_keras", argument])

    @parameterized.named_parameters(
        ("more_than_exist", "8"),
        ("missing_gpu", "/gpu:99"),
        ("other_job", "/job:foo/cpu:0"),
        ("same_device_twice", "/cpu:0,/device:CPU:0"),
    )
    def test_devices_this_process_lacks_are_a_usage_error(self, value):
        for main in (train_keras.main, train_custom_loop.main, legacy_multi_gpu_model.main):
            with flagsaver.flagsaver(devices=value):
                with self.assertRaisesRegex(app.UsageError, "--devices"):
                    main([])

    @parameterized.named_parameters(
        ("unset", None, None),
        ("count", "3", 3),
        ("gpu_ids", "0,1", ["/gpu:0", "/gpu:1"]),
        ("names", "/cpu:0, /cpu:1", ["/cpu:0", "/cpu:1"]),
    )
    def test_parse_devices(self, value, expected):
        self.assertEqual(trainer_flags.parse_devices(value), expected)

    @parameterized.named_parameters(
        ("even", "even", "even"),
        ("auto", "auto", "auto"),
        ("integers", "3,1", (3.0, 1.0)),
        ("fractions_with_spaces", " 0.6, 0.4 ", (0.6, 0.4)),
        ("one_device", "1", (1.0,)),
    )
    def test_parse_split(self, value, expected):
        self.assertEqual(trainer_flags.parse_split(value), expected)
        self.assertEqual(
            trainer_flags.replica_options(split=expected).get("split", "even"), expected
        )

    def test_split_other_than_even_with_another_strategy_is_rejected_when_parsed(self):
        for strategy in ("mirrored", "central_storage", "one_device", "multi_worker", "default"):
            with flagsaver.flagsaver():
                with self.assertRaisesRegex(
                    flags.IllegalFlagValueError, "--split is an option of --strategy=replica"
                ):
                    flags.FLAGS(["train_keras", f"--strategy={strategy}", "--split=auto"])
        with flagsaver.flagsaver():  # Every strategy splits evenly.
            flags.FLAGS(["train_keras", "--strategy=mirrored", "--split=even"])

    def test_split_weights_not_one_per_device_are_a_usage_error(self):
        for main in (train_keras.main, train_custom_loop.main):
            with flagsaver.flagsaver(split="3,2,1", devices="2"):
                with self.assertRaisesRegex(
                    app.UsageError, r"--split gives 3 weights for 2 replica devices"
                ):
                    main([])

    def test_legacy_trainer_refuses_an_uneven_split(self):
        with flagsaver.flagsaver(split="auto"):
            with self.assertRaisesRegex(app.UsageError, "--split: multi_gpu_model splits"):
                legacy_multi_gpu_model.main([])

    def test_a_device_name_the_process_lacks_names_the_flag_what_exists_and_the_fix(self):
        # Only a count or all of /cpu:0 .. /cpu:<n-1> split the CPU (trainer_flags_test runs the
        # trainer on a machine of one CPU, where /cpu:5 once gave six logical devices).
        with self.assertRaisesRegex(
            app.UsageError,
            r"--devices names /cpu:9, which this process does not have\. Available: "
            r"/device:CPU:0, .*/device:CPU:3.*\. Name devices from that list, or split the CPU "
            r"into logical devices: give a count, e\.g\. --devices=2, or name them all, "
            r"--devices=/cpu:0,/cpu:1\. Received: --devices=/cpu:0,/cpu:9",
        ):
            local_devices.configure_devices(["/cpu:0", "/cpu:9"])

    def test_configure_devices_uses_existing_logical_cpus_once_initialized(self):
        # The runtime is initialized (4 logical CPUs): no reconfiguration, no error.
        self.assertEqual(local_devices.configure_devices(2), ["/cpu:0", "/cpu:1"])


class DescribeStrategyTest(tf.test.TestCase):
    """The lines a run starts with: the strategy, its devices and where the weights live."""

    def test_replica_strategy_names_the_parameter_device_and_mirror_weights(self):
        default = describe.describe_strategy(
            replica_strategy.ReplicaStrategy(virtual_devices.cpus(2))
        )
        self.assertEqual(
            default.splitlines(),
            [
                "Strategy: ReplicaStrategy, 2 replicas on /cpu:0, /cpu:1.",
                "Placement: the weights and the optimizer state once on /cpu:0 (the parameter "
                "device), read by every replica (mirror_weights=False); gradients summed there "
                "(the merge device), the optimizer steps on /cpu:0.",
            ],
        )
        mirrored = describe.describe_strategy(
            replica_strategy.ReplicaStrategy(
                ["/cpu:1", "/cpu:2"], parameter_device="/cpu:0", mirror_weights=True
            )
        )
        self.assertIn("Strategy: ReplicaStrategy, 2 replicas on /cpu:1, /cpu:2.", mirrored)
        self.assertIn("master weights and the optimizer state once on /cpu:0", mirrored)
        self.assertIn("(mirror_weights=True)", mirrored)
        merged_elsewhere = describe.describe_strategy(
            replica_strategy.ReplicaStrategy(virtual_devices.cpus(2), merge_device="/cpu:1")
        )
        self.assertIn("gradients summed on /cpu:1 (the merge device)", merged_elsewhere)

    def test_tensorflow_strategies_are_described_by_their_placement(self):
        devices = virtual_devices.cpus(2)
        cases = {
            tf.distribute.MirroredStrategy(devices): "a copy of the weights and of the optimizer "
            "state on each replica device",
            tf.distribute.experimental.CentralStorageStrategy(devices): "once on /cpu:0",
            tf.distribute.OneDeviceStrategy("/cpu:1"): "every step on /cpu:1",
            tf.distribute.get_strategy(): "TensorFlow's default strategy",
        }
        for strategy, placement in cases.items():
            text = describe.describe_strategy(strategy)
            self.assertLen(text.splitlines(), 2, text)
            self.assertStartsWith(text, "Strategy: ")
            self.assertIn(placement, text)


class TrainKerasTest(tf.test.TestCase, parameterized.TestCase):
    def test_digits_reach_95_percent_held_out_accuracy(self):
        result = train_keras.train(
            devices=virtual_devices.cpus(2), model_dir=self.create_tempdir().full_path, verbose=0
        )
        self.assertGreaterEqual(result.test_accuracy, 0.95)

    @parameterized.named_parameters(
        ("replica", "replica"),
        ("mirrored", "mirrored"),
        ("central_storage", "central_storage"),
        ("one_device", "one_device"),
        ("default", "default"),
    )
    def test_strategy_trains_and_writes_outputs(self, strategy):
        model_dir = self.create_tempdir().full_path
        result = train_keras.train(
            strategy=strategy, devices=virtual_devices.cpus(2), model_dir=model_dir, **_TINY
        )
        self.assertLen(result.history["loss"], 1)
        for name in ("model.keras", "summary.json", "checkpoints", "logs"):
            self.assertTrue(os.path.exists(os.path.join(model_dir, name)), name)

    def test_mirror_weights_trains_like_the_default_placement(self):
        results = [
            train_keras.train(
                devices=virtual_devices.cpus(2),
                model_dir=self.create_tempdir().full_path,
                mirror_weights=mirror_weights,
                **_TINY,
            )
            for mirror_weights in (False, True)
        ]
        for ours, default in zip(results[1].weights, results[0].weights, strict=True):
            self.assertAllClose(ours, default, atol=1e-5)

    def test_mirror_weights_with_another_strategy_is_rejected_when_parsed(self):
        with flagsaver.flagsaver():
            with self.assertRaisesRegex(flags.IllegalFlagValueError, "--mirror_weights"):
                flags.FLAGS(["train_keras", "--strategy=mirrored", "--mirror_weights"])

    def test_split_is_printed_and_written_to_the_summary(self):
        model_dir = self.create_tempdir().full_path
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            result = train_keras.train(
                devices=virtual_devices.cpus(2), model_dir=model_dir, split=(3, 1), **_TINY
            )
        self.assertIn(
            "Batch split: --split=3,1, fractions 0.750 / 0.250 of each batch on", output.getvalue()
        )
        with open(os.path.join(model_dir, "summary.json")) as file:
            summary = json.load(file)
        self.assertEqual(summary["split"]["requested"], [3, 1])
        self.assertAllClose(summary["split"]["fractions"], [0.75, 0.25])
        self.assertEqual(result.split, summary["split"])

    def test_even_split_is_recorded_for_every_strategy(self):
        # Only ReplicaStrategy is asked for a split; the others split evenly whatever is asked.
        for strategy, requested in (("replica", "even"), ("mirrored", None)):
            model_dir = self.create_tempdir().full_path
            train_keras.train(
                strategy=strategy, devices=virtual_devices.cpus(2), model_dir=model_dir, **_TINY
            )
            with open(os.path.join(model_dir, "summary.json")) as file:
                split = json.load(file)["split"]
            self.assertEqual(split["requested"], requested)
            self.assertAllClose(split["fractions"], [0.5, 0.5])

    def test_uneven_split_trains_like_the_even_split(self):
        # Every row weighs 1/B under any split (no opt-in): the weights after fit are the same.
        results = [
            train_keras.train(
                devices=virtual_devices.cpus(2),
                model_dir=self.create_tempdir().full_path,
                split=split,
                **_TINY,
            )
            for split in ("even", (3, 1))
        ]
        for uneven, even in zip(results[1].weights, results[0].weights, strict=True):
            self.assertAllClose(uneven, even, atol=1e-5)

    def test_auto_split_trains_and_records_fractions_that_sum_to_one(self):
        model_dir = self.create_tempdir().full_path
        result = train_keras.train(
            devices=virtual_devices.cpus(2), model_dir=model_dir, split="auto", **_TINY
        )
        self.assertEqual(result.split["requested"], "auto")
        self.assertLen(result.split["fractions"], 2)
        self.assertAllClose(sum(result.split["fractions"]), 1.0)
        self.assertTrue(all(fraction > 0 for fraction in result.split["fractions"]))

    def test_synthetic_dataset_trains(self):
        result = train_keras.train(
            dataset="synthetic",
            image_size=4,
            devices=virtual_devices.cpus(2),
            model_dir=self.create_tempdir().full_path,
            **_TINY,
        )
        self.assertEqual(result.weights[0].shape, (4 * 4 * 3, 4))

    def test_main_turns_flags_into_a_run(self):
        model_dir = self.create_tempdir().full_path
        flags = dict(_TINY, devices="2", model_dir=model_dir)
        del flags["verbose"]
        with flagsaver.flagsaver(**flags):
            train_keras.main([])
        self.assertTrue(os.path.exists(os.path.join(model_dir, "model.keras")))

    def test_fused_adam_run_saves_a_model_keras_alone_loads_and_trains_on(self):
        model_dir = self.create_tempdir().full_path
        result = train_keras.train(
            optimizer="fused_adam", devices=virtual_devices.cpus(2), model_dir=model_dir, **_TINY
        )
        rng = np.random.default_rng(0)
        x = rng.random((8, 8, 8, 1), dtype="float32")  # 8 digits' images
        y = rng.integers(0, 10, size=8)
        report, arrays = fresh_keras_process.load_and_train(
            result.model_path, x, y, 8, self.create_tempdir().full_path, keras_alone=True
        )
        self.assertEmpty(report["imported"])
        self.assertIsNone(report["plain_load_error"])  # No `custom_objects` needed.
        adam = keras.optimizers.Adam
        self.assertEqual(report["optimizer_class"], f"{adam.__module__}.{adam.__qualname__}")
        for loaded, trained in zip(arrays["loaded"]["weight"], result.weights, strict=True):
            self.assertAllEqual(loaded, trained)
        # The optimizer state is the last checkpoint's: `optimizer.variables` is (iterations,
        # learning rate, then each slot), tracked by the checkpoint in that order.
        reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
        keys = ["_iterations", "_learning_rate"] + [
            f"_variables/{index}" for index in range(2, len(arrays["loaded"]["optimizer"]))
        ]
        for key, loaded in zip(keys, arrays["loaded"]["optimizer"], strict=True):
            self.assertAllEqual(
                loaded, reader.get_tensor(f"optimizer/{key}/.ATTRIBUTES/VARIABLE_VALUE"), msg=key
            )
        self.assertEqual(int(arrays["loaded"]["optimizer"][0]), 4)  # 32 samples, batches of 8
        self.assertEqual(int(arrays["trained"]["optimizer"][0]), 5)
        self.assertNotAllClose(arrays["trained"]["weight"][0], arrays["loaded"]["weight"][0])


def _logged_steps(log_dir: str, tag: str) -> list[int]:
    """The steps at which TensorBoard event files under `log_dir` hold scalar `tag`."""
    steps = []
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            steps.extend(event.step for value in event.summary.value if value.tag == tag)
    return sorted(steps)


class TensorBoardLogTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("keras_fit", train_keras.train), ("custom_loop", train_custom_loop.train)
    )
    def test_one_scalar_per_epoch_at_the_steps_keras_uses_across_a_resume(self, train):
        # Both trainers log as Keras' TensorBoard callback does: logs/train and
        # logs/validation, tag epoch_<metric>, step = epoch index from 0.
        model_dir = self.create_tempdir().full_path
        settings = dict(_TINY, devices=virtual_devices.cpus(2), model_dir=model_dir)
        train(**settings | {"epochs": 2})
        train(**settings | {"epochs": 3})  # Resumes after epoch 2.
        logs = os.path.join(model_dir, "logs")
        self.assertEqual(_logged_steps(os.path.join(logs, "train"), "epoch_loss"), [0, 1, 2])
        self.assertEqual(
            _logged_steps(os.path.join(logs, "validation"), "epoch_accuracy"), [0, 1, 2]
        )


class TrainCustomLoopTest(tf.test.TestCase):
    def test_uneven_replicas_give_the_weights_of_no_strategy(self):
        # 50 rows in batches of 10 on 3 replicas split 4, 3, 3: dividing each replica's summed
        # loss by the global row count makes the summed gradients the global mean exactly.
        settings = dict(num_samples=50, hidden_units=6, batch_size=10, epochs=2, verbose=0)
        replicated = train_custom_loop.train(
            strategy="replica",
            devices=virtual_devices.cpus(3),
            model_dir=self.create_tempdir().full_path,
            **settings,
        )
        single = train_custom_loop.train(
            strategy="default", model_dir=self.create_tempdir().full_path, **settings
        )
        for replicated_weight, single_weight in zip(
            replicated.weights, single.weights, strict=True
        ):
            self.assertAllClose(replicated_weight, single_weight, atol=1e-5, rtol=1e-5)
        self.assertLen(replicated.history["val_accuracy"], 2)

    def test_split_by_weights_gives_the_weights_of_no_strategy(self):
        # 50 rows in batches of 10 split 3:1 (8, 2 rows): dividing by the global row count
        # keeps every row at 1/B whatever the split.
        settings = dict(num_samples=50, hidden_units=6, batch_size=10, epochs=2, verbose=0)
        replicated = train_custom_loop.train(
            strategy="replica",
            devices=virtual_devices.cpus(2),
            model_dir=self.create_tempdir().full_path,
            split=(3, 1),
            **settings,
        )
        single = train_custom_loop.train(
            strategy="default", model_dir=self.create_tempdir().full_path, **settings
        )
        for replicated_weight, single_weight in zip(
            replicated.weights, single.weights, strict=True
        ):
            self.assertAllClose(replicated_weight, single_weight, atol=1e-5, rtol=1e-5)
        self.assertAllClose(replicated.split["fractions"], [0.75, 0.25])

    def test_learns_digits(self):
        result = train_custom_loop.train(
            devices=virtual_devices.cpus(2),
            model_dir=self.create_tempdir().full_path,
            epochs=5,
            verbose=0,
        )
        self.assertGreaterEqual(result.test_accuracy, 0.9)
        self.assertTrue(np.isfinite(result.history["loss"]).all())


class LegacyMultiGpuModelTest(tf.test.TestCase):
    def _train(self, **settings):
        values = dict(
            devices=virtual_devices.cpus(2),
            num_samples=24,
            image_size=6,
            hidden_units=4,
            batch_size=8,
            epochs=2,
            model_dir=self.create_tempdir().full_path,
            verbose=0,
        )
        return legacy_multi_gpu_model.train(**values | settings)

    def test_template_saved_after_training_holds_the_trained_weights(self):
        result = self._train()
        self.assertLen(result.history["loss"], 2)
        saved = keras.models.load_model(result.model_path).get_weights()
        for saved_weight, template_weight in zip(saved, result.weights, strict=True):
            self.assertAllEqual(saved_weight, template_weight)

    def test_trains_on_digits_and_says_so(self):
        # Keras' documented example trained on random labels, whose loss cannot fall; this one
        # trains on --dataset (digits by default), and its first line says what the data is.
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            result = self._train(num_samples=None, hidden_units=16, epochs=3)
        self.assertStartsWith(output.getvalue(), "Data: digits")
        self.assertLess(result.history["loss"][-1], 0.5 * result.history["loss"][0])
        self.assertGreater(result.test_accuracy, 0.8)

    def test_synthetic_dataset_sets_the_input_shape(self):
        result = self._train(dataset="synthetic")
        # Conv2D(8, 3) on 6x6x3 images: 4 * 4 * 8 features into the hidden layer.
        self.assertEqual(result.weights[2].shape, (4 * 4 * 8, 4))

    def test_mirror_weights_flag_is_a_usage_error(self):
        with flagsaver.flagsaver(mirror_weights=True):
            with self.assertRaisesRegex(app.UsageError, "--mirror_weights"):
                legacy_multi_gpu_model.main([])

    def test_strategy_flag_other_than_replica_is_a_usage_error(self):
        with flagsaver.flagsaver(strategy="mirrored"):
            with self.assertRaisesRegex(app.UsageError, "--strategy"):
                legacy_multi_gpu_model.main([])


if __name__ == "__main__":
    tf.test.main()
