"""The trainers as programs: `--help`, usage errors, and what they log (real subprocesses)."""

import json
import os
import re
import subprocess
import sys
import zipfile

import tensorflow as tf
from absl.testing import parameterized

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TRAINERS = ("train_keras", "train_custom_loop", "legacy_multi_gpu_model")
_SHARED_FLAGS = (
    "strategy",
    "mirror_weights",
    "split",
    "devices",
    "dataset",
    "num_samples",
    "image_size",
    "hidden_units",
    "batch_size",
    "epochs",
    "learning_rate",
    "optimizer",
    "seed",
    "model_dir",
)
_TINY = ["--num_samples=16", "--hidden_units=4", "--batch_size=8", "--epochs=1", "--devices=2"]


def _run(trainer: str, *flags: str, environment: dict | None = None):
    script = os.path.join(_REPOSITORY, "examples", f"{trainer}.py")
    return subprocess.run(
        [sys.executable, script, *flags],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2", **environment or {}),
        timeout=300,
    )


class TrainerProgramTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters((trainer, trainer) for trainer in _TRAINERS)
    def test_help_lists_the_trainer_flags(self, trainer):
        run = _run(trainer, "--help")
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])  # Help asked for is no error.
        for name in _SHARED_FLAGS:
            self.assertRegex(
                run.stdout, rf"(?m)^\s+--(\[no\])?{name}\b", f"--{name} missing from --help"
            )

    @parameterized.named_parameters(
        ("mixed_ids_and_names", "0,/cpu:1"),  # Rejected by absl while parsing.
        ("missing_device", "/gpu:99"),  # Rejected once TensorFlow lists the devices.
        ("other_job", "/job:foo/cpu:0"),
    )
    def test_bad_devices_is_a_usage_error(self, value):
        run = _run(
            "train_keras", f"--devices={value}", f"--model_dir={self.create_tempdir().full_path}"
        )
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn("--devices", run.stderr)
        self.assertIn(value, run.stderr)
        self.assertNotIn("Traceback", run.stderr)

    @parameterized.named_parameters((trainer, trainer) for trainer in _TRAINERS)
    def test_usage_error_is_its_message_without_the_help(self, trainer):
        a_file = self.create_tempfile().full_path
        run = _run(trainer, "--devices=2", f"--model_dir={a_file}")
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn(
            f"UsageError: --model_dir {a_file} is a file, not a directory. Choose a directory",
            run.stderr,
        )
        # app.run would print the module's docstring and every flag before it.
        self.assertNotIn("Run from the repository root", run.stderr + run.stdout)
        self.assertNotIn("--hidden_units", run.stderr + run.stdout)
        self.assertNotIn("Traceback", run.stderr)

    def test_a_device_name_the_machine_lacks_is_an_error_not_a_split(self):
        # This process has one CPU (no virtual_devices): a name never splits it, a count does.
        run = _run(
            "train_keras", "--devices=/cpu:5", f"--model_dir={self.create_tempdir().full_path}"
        )
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn(
            "UsageError: --devices names /cpu:5, which this process does not have. Available: "
            "/device:CPU:0. Name devices from that list, or split the CPU into logical devices: "
            "give a count, e.g. --devices=2, or name them all, --devices=/cpu:0,/cpu:1. "
            "Received: --devices=/cpu:5",
            run.stderr,
        )
        self.assertNotIn("Strategy:", run.stdout)

    def test_the_device_names_a_run_prints_are_accepted(self):
        # This process has one CPU: /cpu:0 and /cpu:1, all of them, split it as --devices=2.
        tiny = [flag for flag in _TINY if not flag.startswith("--devices")]
        run = _run(
            "train_keras",
            *tiny,
            "--devices=/cpu:0,/device:CPU:1",
            f"--model_dir={self.create_tempdir().full_path}",
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        self.assertIn("Strategy: ReplicaStrategy, 2 replicas on /cpu:0, /cpu:1.", run.stdout)

    def test_one_device_with_several_devices_is_a_usage_error(self):
        run = _run(
            "train_keras",
            "--strategy=one_device",
            "--devices=2",
            f"--model_dir={self.create_tempdir().full_path}",
        )
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn(
            "--strategy=one_device runs one replica on one device: give one, e.g. --devices=1 or "
            "--devices=/gpu:0, or replicate with --strategy=replica or mirrored. Received: "
            "--strategy=one_device --devices=2",
            run.stderr,
        )
        self.assertNotIn("Strategy:", run.stdout)

    @parameterized.named_parameters(
        (
            "replica_mirror_weights",
            "train_keras",
            ["--mirror_weights"],
            "Strategy: ReplicaStrategy, 2 replicas on /cpu:0, /cpu:1.",
            "Placement: the master weights and the optimizer state once on /cpu:0 (the parameter "
            "device), a working copy of the trainable weights on each replica device "
            "(mirror_weights=True)",
        ),
        (
            "mirrored",
            "train_custom_loop",
            ["--strategy=mirrored"],
            "Strategy: MirroredStrategy, 2 replicas on /cpu:0, /cpu:1.",
            "Placement: a copy of the weights and of the optimizer state on each replica device",
        ),
        (
            "one_device",
            "train_keras",
            ["--strategy=one_device", "--devices=1"],
            "Strategy: OneDeviceStrategy, 1 replica on /cpu:0.",
            "Placement: the weights, the optimizer state and every step on /cpu:0.",
        ),
        (
            "legacy",
            "legacy_multi_gpu_model",
            [],
            "Strategy: ReplicaStrategy, 2 replicas on /cpu:0, /cpu:1.",
            "Placement: the weights and the optimizer state once on /cpu:0 (the parameter "
            "device), read by every replica (mirror_weights=False)",
        ),
    )
    def test_first_lines_name_the_strategy_devices_and_placement(
        self, trainer, arguments, strategy_line, placement
    ):
        run = _run(trainer, *_TINY, *arguments, f"--model_dir={self.create_tempdir().full_path}")
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        lines = run.stdout.splitlines()
        self.assertStartsWith(lines[0], "Data: digits")
        self.assertEqual(lines[1], strategy_line)
        self.assertStartsWith(lines[2], placement)

    def test_logs_warnings_only_by_default(self):
        run = _run("train_keras", *_TINY, f"--model_dir={self.create_tempdir().full_path}")
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        # Python logging's INFO lines, in absl's format ("I1126 14:02:23.882671 ...") or in
        # TensorFlow's own ("INFO:tensorflow:..."); the C++ runtime's start with "I0000".
        info = [
            line for line in run.stderr.splitlines() if re.match(r"I(?!0000)\d{4} |INFO:", line)
        ]
        self.assertEmpty(info)
        self.assertNotIn("CentralStorageStrategy", run.stderr)

    def test_verbosity_flag_shows_info_lines_once_each(self):
        run = _run(
            "train_keras",
            *_TINY,
            "--strategy=mirrored",
            "--verbosity=0",
            f"--model_dir={self.create_tempdir().full_path}",
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        # MirroredStrategy logs this once, at INFO; TensorFlow's handler and absl's both printed it.
        self.assertLen(re.findall("Using MirroredStrategy with devices", run.stderr), 1)
        self.assertNotIn("INFO:tensorflow:", run.stderr)


class SplitFlagTest(tf.test.TestCase, parameterized.TestCase):
    """`--split`: checked as it is parsed, printed at the start and written to summary.json."""

    @parameterized.named_parameters(
        ("unknown_word", ["--split=fastest"], "--split=fastest"),
        ("zero_weight", ["--split=1,0"], "--split=1,0"),
        ("another_strategy", ["--strategy=mirrored", "--split=auto"], "--strategy=mirrored"),
        ("weights_not_one_per_device", ["--split=3,2,1", "--devices=2"], "--split=3,2,1"),
    )
    def test_bad_split_is_a_usage_error(self, arguments, echoed):
        run = _run("train_keras", *arguments, f"--model_dir={self.create_tempdir().full_path}")
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn("--split", run.stderr)
        self.assertIn(echoed, run.stderr)
        self.assertNotIn("Traceback", run.stderr)

    def test_auto_split_is_printed_at_the_start_and_recorded(self):
        model_dir = self.create_tempdir().full_path
        run = _run("train_keras", *_TINY, "--split=auto", f"--model_dir={model_dir}")
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        self.assertIn(
            "Batch split: --split=auto, fractions 0.500 / 0.500 of each batch", run.stdout
        )
        self.assertIn("Batch split at the end: fractions", run.stdout)
        with open(os.path.join(model_dir, "summary.json")) as file:
            split = json.load(file)["split"]
        self.assertEqual(split["requested"], "auto")
        self.assertAllClose(sum(split["fractions"]), 1.0)


class OptimizerFlagTest(tf.test.TestCase, parameterized.TestCase):
    """`--optimizer`: Keras' Adam or `replica_strategy.FusedAdam`, checkpoints shared."""

    def test_help_says_when_to_choose_fused_adam(self):
        run = _run("train_keras", "--help")
        help_text = " ".join(run.stdout.split())  # absl wraps the help text.
        self.assertIn("'fused_adam' (replica_strategy.FusedAdam", help_text)
        self.assertIn("host CPU every step, as with --strategy=replica", help_text)
        self.assertIn("about 3x faster there", help_text)

    def test_unknown_optimizer_is_a_usage_error(self):
        run = _run("train_keras", "--optimizer=sgd")
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn("--optimizer=sgd", run.stderr)
        self.assertIn("adam|fused_adam", run.stderr)

    def test_legacy_trainer_refuses_fused_adam(self):
        run = _run("legacy_multi_gpu_model", "--optimizer=fused_adam", *_TINY)
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        self.assertIn("--optimizer: legacy_multi_gpu_model trains with RMSprop", run.stderr)
        self.assertNotIn("Traceback", run.stderr)

    @parameterized.named_parameters(
        ("train_keras", "train_keras"), ("custom_loop", "train_custom_loop")
    )
    def test_a_run_resumes_with_the_other_optimizer(self, trainer):
        # Both keep Adam's slots under the same names: epoch 1 with Keras' Adam, epoch 2 with
        # FusedAdam from the same checkpoint.
        model_dir = f"--model_dir={self.create_tempdir().full_path}"
        tiny = [flag for flag in _TINY if not flag.startswith("--epochs")]
        first = _run(trainer, *tiny, "--epochs=1", model_dir)
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        second = _run(trainer, *tiny, "--epochs=2", "--optimizer=fused_adam", model_dir)
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertIn("Resumed from checkpoint", second.stdout)
        self.assertIn("after epoch 1 of 2", second.stdout)
        if trainer == "train_keras":
            # The run trained with FusedAdam but saves the Keras Adam it equals, so that Keras
            # alone loads model.keras (docs/keras.md, "Where a .keras file of FusedAdam loads").
            path = model_dir.removeprefix("--model_dir=") + "/model.keras"
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            optimizer = config["compile_config"]["optimizer"]
            self.assertEqual(
                (optimizer["module"], optimizer["class_name"]), ("keras.optimizers", "Adam")
            )


if __name__ == "__main__":
    tf.test.main()
