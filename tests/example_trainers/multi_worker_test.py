"""`--strategy=multi_worker`: two worker processes on loopback train as one.

Each worker is a subprocess with its own TF_CONFIG; TensorFlow's MultiWorkerMirroredStrategy
sums their gradients. With even global batches, that equals one process with no strategy on
the same global batches.
"""

import json
import os
import socket
import subprocess
import sys

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import keras
import tensorflow as tf
from absl.testing import parameterized

from examples import train_custom_loop, train_keras

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 64 rows in global batches of 16: every batch splits 8 + 8 across the two workers.
_SETTINGS = {"num_samples": 64, "hidden_units": 8, "batch_size": 16, "epochs": 3, "seed": 3}
_TRAINERS = {"train_keras": train_keras, "train_custom_loop": train_custom_loop}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def _start_worker(trainer: str, cluster: dict, index: int, model_dir: str):
    tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
    flags = [f"--{name}={value}" for name, value in _SETTINGS.items()]
    return subprocess.Popen(
        [
            sys.executable,
            os.path.join(_REPOSITORY, "examples", f"{trainer}.py"),
            "--strategy=multi_worker",
            f"--model_dir={model_dir}",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(
            os.environ,
            PYTHONPATH=_REPOSITORY,
            TF_CONFIG=json.dumps(tf_config),
            TF_CPP_MIN_LOG_LEVEL="2",
        ),
    )


class MultiWorkerTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("keras_fit", "train_keras"), ("custom_loop", "train_custom_loop")
    )
    def test_two_workers_match_each_other_and_one_process(self, trainer):
        model_dir = self.create_tempdir().full_path
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
        workers = [_start_worker(trainer, cluster, index, model_dir) for index in range(2)]
        outputs = [worker.communicate(timeout=300)[0] for worker in workers]
        for worker, output in zip(workers, outputs, strict=True):
            self.assertEqual(worker.returncode, 0, output[-3000:])

        # Only the chief writes to model_dir; worker 1 writes to its workertemp_1.
        chief = keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()
        other = keras.models.load_model(
            os.path.join(model_dir, "workertemp_1", "model.keras")
        ).get_weights()
        single = _TRAINERS[trainer].train(
            strategy="default", model_dir=self.create_tempdir().full_path, verbose=0, **_SETTINGS
        )
        for chief_weight, other_weight, single_weight in zip(
            chief, other, single.weights, strict=True
        ):
            self.assertAllClose(chief_weight, other_weight, atol=1e-5, rtol=1e-5)
            self.assertAllClose(chief_weight, single_weight, atol=1e-5, rtol=1e-5)


if __name__ == "__main__":
    tf.test.main()
