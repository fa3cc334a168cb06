"""Nothing lost on a crash: a trainer killed with SIGKILL resumes from its last checkpoint."""

import os
import re
import signal
import subprocess
import sys

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import keras
import tensorflow as tf
from absl.testing import parameterized

from examples import checkpoints, train_custom_loop, train_keras

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_EPOCHS = 30
_KILL_AFTER_EPOCH = 3
_SETTINGS = {"num_samples": 48, "hidden_units": 8, "batch_size": 16, "epochs": _EPOCHS, "seed": 7}
_TRAINERS = {"train_keras": train_keras, "train_custom_loop": train_custom_loop}
_SAVED = re.compile(r"^Epoch (\d+)/\d+: .*checkpoint saved")


def _command(trainer: str, model_dir: str) -> list[str]:
    flags = [f"--{name}={value}" for name, value in _SETTINGS.items()]
    script = os.path.join(_REPOSITORY, "examples", f"{trainer}.py")
    return [sys.executable, script, "--devices=2", f"--model_dir={model_dir}", *flags]


def _environment() -> dict:
    return dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2")


def _saved_epochs(lines: list[str]) -> list[int]:
    return [int(match.group(1)) for match in map(_SAVED.match, lines) if match]


class ResumeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("keras_fit", "train_keras"), ("custom_loop", "train_custom_loop")
    )
    def test_sigkill_then_restart_resumes_and_matches_an_uninterrupted_run(self, trainer):
        model_dir = self.create_tempdir().full_path
        process = subprocess.Popen(
            _command(trainer, model_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_environment(),
        )
        lines = []
        for line in process.stdout:
            lines.append(line)
            if _KILL_AFTER_EPOCH in _saved_epochs([line]):
                process.send_signal(signal.SIGKILL)
                break
        lines.extend(process.stdout)  # What it printed before it died.
        process.wait(timeout=60)
        self.assertEqual(process.returncode, -signal.SIGKILL, "".join(lines))
        last_saved = max(_saved_epochs(lines))
        self.assertLess(last_saved, _EPOCHS)  # Killed mid-training.

        restarted = subprocess.run(
            _command(trainer, model_dir),
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=300,
            check=True,
        )
        self.assertRegex(
            restarted.stdout,
            f"Resumed from checkpoint .*ckpt-{last_saved} after epoch {last_saved} of {_EPOCHS}",
        )
        # Not from scratch: the restart trains only the epochs after the checkpoint.
        self.assertEqual(
            _saved_epochs(restarted.stdout.splitlines()), list(range(last_saved + 1, _EPOCHS + 1))
        )

        uninterrupted = _TRAINERS[trainer].train(
            devices=virtual_devices.cpus(2),
            model_dir=self.create_tempdir().full_path,
            verbose=0,
            **_SETTINGS,
        )
        resumed = keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()
        for resumed_weight, weight in zip(resumed, uninterrupted.weights, strict=True):
            self.assertAllClose(resumed_weight, weight, atol=1e-5, rtol=1e-5)


class CheckpointIntegrityTest(tf.test.TestCase):
    def _train(self, model_dir: str, epochs: int):
        return train_keras.train(
            devices=virtual_devices.cpus(2),
            model_dir=model_dir,
            num_samples=16,
            hidden_units=4,
            batch_size=8,
            epochs=epochs,
            verbose=0,
        )

    def test_corrupt_checkpoint_file_is_reported_with_its_path(self):
        model_dir = self.create_tempdir().full_path
        self._train(model_dir, epochs=2)
        index_file = os.path.join(model_dir, "checkpoints", "ckpt-2.index")
        with open(index_file, "r+b") as file:
            file.truncate(os.path.getsize(index_file) // 2)
        with self.assertRaisesRegex(checkpoints.CorruptCheckpointError, re.escape(index_file)):
            self._train(model_dir, epochs=3)

    def test_overwritten_data_file_is_reported_with_its_path(self):
        model_dir = self.create_tempdir().full_path
        self._train(model_dir, epochs=2)
        data_file = os.path.join(model_dir, "checkpoints", "ckpt-2.data-00000-of-00001")
        size = os.path.getsize(data_file)
        with open(data_file, "wb") as file:
            file.write(b"\0" * size)  # Same size, wrong bytes: only the checksum can tell.
        with self.assertRaisesRegex(checkpoints.CorruptCheckpointError, re.escape(data_file)):
            self._train(model_dir, epochs=3)

    def test_checkpoint_without_manifest_is_skipped_for_the_previous_one(self):
        # A checkpoint whose manifest is missing was being written when the process died.
        model_dir = self.create_tempdir().full_path
        self._train(model_dir, epochs=2)
        os.remove(os.path.join(model_dir, "checkpoints", "ckpt-2.manifest.json"))
        result = self._train(model_dir, epochs=3)
        self.assertEqual(result.initial_epoch, 1)
        self.assertLen(result.history["loss"], 2)


if __name__ == "__main__":
    tf.test.main()
