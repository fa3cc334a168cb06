"""The trainers' checkpoint directory: nothing committed is lost, nothing foreign is mixed in.

Damaged pointer file, glob characters in --model_dir, two trainers on one --model_dir (real
subprocesses), the lock of a killed trainer, and a --model_dir that cannot be a directory.
"""

import contextlib
import hashlib
import io
import os
import re
import signal
import subprocess
import sys

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import tensorflow as tf
from absl.testing import flagsaver, parameterized

from examples import checkpoints, legacy_multi_gpu_model, model_dir, train_custom_loop, train_keras

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TINY = {"num_samples": 16, "hidden_units": 4, "batch_size": 8, "verbose": 0}
_SAVED = re.compile(r"^Epoch (\d+)/\d+: .*checkpoint saved")


def _train(directory: str, epochs: int, **settings):
    return train_keras.train(
        devices=virtual_devices.cpus(2), model_dir=directory, epochs=epochs, **_TINY | settings
    )


def _contents(directory: str) -> dict:
    """{relative path: SHA-256} of every file under `directory`."""
    contents = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as file:
                contents[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
    return contents


def _checkpoints(directory: str) -> dict:
    return {
        name: digest
        for name, digest in _contents(directory).items()
        if name.startswith("checkpoints/ckpt-")
    }


class DamagedPointerTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("one_damaged_byte", "damage"), ("deleted", "delete"))
    def test_resumes_from_the_newest_verified_checkpoint_and_says_so(self, fault):
        directory = self.create_tempdir().full_path
        _train(directory, epochs=3)
        committed = _checkpoints(directory)
        pointer = os.path.join(directory, "checkpoints", "checkpoint")
        if fault == "damage":
            with open(pointer, "r+b") as file:
                text = file.read()
                file.seek(text.index(b":"))
                file.write(b";")  # model_checkpoint_path; "ckpt-3": TensorFlow cannot parse it.
        else:
            os.remove(pointer)

        with self.assertLogs(level="WARNING") as logs:
            result = _train(directory, epochs=4)

        # Not from scratch: epochs 1-3 stay trained; only epoch 4 runs.
        self.assertEqual(result.initial_epoch, 3)
        self.assertLen(result.history["loss"], 1)
        self.assertTrue(any(pointer in line and "ckpt-3" in line for line in logs.output))
        # Committed checkpoints 2 and 3 are untouched; 1 was pruned (3 kept), 4 was added.
        after = _checkpoints(directory)
        for name, digest in committed.items():
            if not name.startswith("checkpoints/ckpt-1."):
                self.assertEqual(after.get(name), digest, name)
        self.assertIn("checkpoints/ckpt-4.manifest.json", after)
        self.assertNotIn("checkpoints/ckpt-1.index", after)
        # The pointer is right again, for tools that read it.
        self.assertEqual(
            tf.train.latest_checkpoint(os.path.dirname(pointer)),
            os.path.join(os.path.dirname(pointer), "ckpt-4"),
        )


class GlobCharactersTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("brackets", "run[1]", "run1"),
        ("star", "run*", "run1"),
        ("question_mark", "run?", "runs"),
    )
    def test_model_dir_with_glob_characters_leaves_the_neighbour_run_alone(
        self, name, neighbour_name
    ):
        # `name`, read as a glob pattern, matches `neighbour_name`.
        parent = self.create_tempdir().full_path
        neighbour = os.path.join(parent, neighbour_name)
        _train(neighbour, epochs=2)
        neighbour_before = _contents(neighbour)

        directory = os.path.join(parent, name)
        _train(directory, epochs=5)  # Saves 5 checkpoints, prunes 2 (3 kept).
        resumed = _train(directory, epochs=6)

        self.assertEqual(_contents(neighbour), neighbour_before)
        self.assertEqual(resumed.initial_epoch, 5)
        self.assertEqual(
            sorted(name for name in _checkpoints(directory) if name.endswith(".manifest.json")),
            [f"checkpoints/ckpt-{epoch}.manifest.json" for epoch in (4, 5, 6)],
        )


class ModelMismatchTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("hidden_units", {"hidden_units": 8}),
        ("dataset", {"dataset": "synthetic", "image_size": 4}),
    )
    def test_other_model_in_the_same_model_dir_is_a_mismatch_not_corruption(self, change):
        directory = self.create_tempdir().full_path
        _train(directory, epochs=1)
        with self.assertRaisesRegex(
            checkpoints.ModelMismatchError,
            "The model does not match the checkpoints in .*Use a new --model_dir",
        ) as raised:
            _train(directory, epochs=2, **change)
        self.assertNotIsInstance(raised.exception, checkpoints.CorruptCheckpointError)

    def test_main_ends_with_the_message_alone(self):
        directory = self.create_tempdir().full_path
        _train(directory, epochs=1)
        settings = dict(_TINY, hidden_units=8, epochs=2, devices="2", model_dir=directory)
        del settings["verbose"]
        with flagsaver.flagsaver(**settings):
            with self.assertRaisesRegex(SystemExit, "^ModelMismatchError: The model does not"):
                train_custom_loop.main([])


def _command(trainer: str, directory: str, *flags: str) -> list[str]:
    script = os.path.join(_REPOSITORY, "examples", f"{trainer}.py")
    settings = ["--num_samples=32", "--hidden_units=4", "--batch_size=16", "--devices=2"]
    return [sys.executable, script, f"--model_dir={directory}", *settings, *flags]


def _environment() -> dict:
    return dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2")


class ModelDirLockTest(tf.test.TestCase):
    def _start_and_wait_for_a_checkpoint(self, directory: str) -> subprocess.Popen:
        """A trainer subprocess with many epochs to go, once it has saved its first checkpoint."""
        process = subprocess.Popen(
            _command("train_keras", directory, "--epochs=1000"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_environment(),
        )
        self.addCleanup(process.wait, timeout=60)
        self.addCleanup(process.kill)
        for line in process.stdout:
            if _SAVED.match(line):
                return process
        self.fail(f"The trainer ended before its first checkpoint: {process.wait()}")

    def test_second_trainer_on_the_same_model_dir_is_refused_naming_the_holder(self):
        directory = self.create_tempdir().full_path
        first = self._start_and_wait_for_a_checkpoint(directory)

        second = subprocess.run(
            _command("train_custom_loop", directory, "--epochs=2", "--seed=1"),
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=120,
        )

        self.assertEqual(second.returncode, 1, second.stderr[-3000:])
        self.assertIn(f"--model_dir {directory} is in use", second.stderr)
        self.assertIn(f"PID {first.pid}", second.stderr)
        self.assertNotIn("Traceback", second.stderr)
        self.assertNotIn("Data:", second.stdout)  # Refused before loading anything.
        self.assertIsNone(first.poll())  # The first one trains on.

    def test_lock_of_a_killed_trainer_is_taken_over_and_logged(self):
        directory = self.create_tempdir().full_path
        killed = self._start_and_wait_for_a_checkpoint(directory)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)

        with self.assertLogs(level="WARNING") as logs:
            result = train_keras.train(
                devices=virtual_devices.cpus(2),
                model_dir=directory,
                num_samples=32,
                hidden_units=4,
                batch_size=16,
                epochs=1,
                verbose=0,
            )

        self.assertGreaterEqual(result.initial_epoch, 1)  # Resumed from the killed run.
        lock_file = os.path.join(directory, model_dir.LOCK_FILE)
        self.assertTrue(
            any(
                f"stale lock {lock_file}" in line and f"PID {killed.pid}" in line
                for line in logs.output
            ),
            logs.output,
        )
        # Ended normally: the lock file names no holder for the next run to report.
        with open(lock_file) as file:
            self.assertEqual(file.read(), "")


class ModelDirCheckedFirstTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("keras_fit", train_keras.train),
        ("custom_loop", train_custom_loop.train),
        ("legacy", legacy_multi_gpu_model.train),
    )
    def test_model_dir_that_is_a_file_is_a_usage_error_before_training(self, train):
        path = self.create_tempfile().full_path
        for directory, problem in ((path, "is a file"), (os.path.join(path, "run"), "cannot")):
            output = io.StringIO()
            with self.assertRaisesRegex(
                model_dir.ModelDirError, f"--model_dir {re.escape(directory)} {problem}"
            ):
                with contextlib.redirect_stdout(output):
                    train(devices=virtual_devices.cpus(2), model_dir=directory, epochs=1)
            self.assertEqual(output.getvalue(), "")  # No data loaded, no model built or trained.

    def test_usage_error_ends_the_program_with_status_1_and_no_traceback(self):
        path = self.create_tempfile().full_path
        run = subprocess.run(
            _command("legacy_multi_gpu_model", path, "--epochs=1"),
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=120,
        )
        self.assertEqual(run.returncode, 1)
        self.assertIn(f"--model_dir {path} is a file", run.stderr)
        self.assertNotIn("Traceback", run.stderr)


if __name__ == "__main__":
    tf.test.main()
