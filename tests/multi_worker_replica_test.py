"""`MultiWorkerReplicaStrategy`: worker processes on 127.0.0.1, each with two logical CPUs.

The workers run tests/multi_worker_replica_worker.py. Oracle: one device trained on the same
global batches, computed in each worker from the initial weights it was given.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import numpy as np
import tensorflow as tf

import replica_strategy

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_REPOSITORY, "tests", "multi_worker_replica_worker.py")
_TIMEOUT_SECONDS = 240
_RUNS = (
    "custom_loop_parameter",
    "custom_loop_mirrored",
    "keras_fit_parameter",
    "keras_fit_mirrored",
)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def _start(mode, cluster, index, output_dir):
    tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
    return subprocess.Popen(
        [sys.executable, _WORKER, mode, output_dir],
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


class _Workers:
    """Worker processes on loopback; every one still running is killed on exit."""

    def __init__(self, mode, count, output_dir="."):
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(count)]}
        self.processes = [_start(mode, cluster, index, output_dir) for index in range(count)]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()

    def outputs(self):
        return [process.communicate(timeout=_TIMEOUT_SECONDS)[0] for process in self.processes]


class MultiWorkerReplicaTest(tf.test.TestCase):
    def _check_training(self, workers):
        output_dir = self.create_tempdir().full_path
        with _Workers("train", workers, output_dir) as started:
            outputs = started.outputs()
            for process, output in zip(started.processes, outputs, strict=True):
                self.assertEqual(process.returncode, 0, output[-4000:])
        results = [np.load(os.path.join(output_dir, f"worker{i}.npz")) for i in range(workers)]
        chief = results[0]
        for run in _RUNS:
            final_keys = sorted(key for key in chief.files if key.startswith(f"{run}/final/"))
            self.assertNotEmpty(final_keys)
            for key in final_keys:
                initial_key = key.replace("/final/", "/initial/")
                for other in results[1:]:
                    # Different seeds on each worker: the chief's initial values were broadcast.
                    np.testing.assert_array_equal(chief[initial_key], other[initial_key])
                    np.testing.assert_array_equal(chief[key], other[key], err_msg=run)
                self.assertAllClose(
                    chief[key], chief[key.replace("/final/", "/one_device/")], atol=1e-5, rtol=1e-5
                )
                self.assertGreater(np.abs(chief[key] - chief[initial_key]).max(), 1e-3)
        for run in ("keras_fit_parameter", "keras_fit_mirrored"):
            for result in results:
                # predict: every worker gets every row, in the dataset's order; evaluate: the
                # mean loss over every worker's rows.
                for position in (0, 1):
                    self.assertAllClose(
                        result[f"{run}/predictions/{position}"],
                        chief[f"{run}/one_device_predictions/{position}"],
                        atol=1e-5,
                        rtol=1e-5,
                    )
        # Global batches of 8, 8, 8, 1 over two epochs: the last leaves a worker no rows.
        rows = [result["custom_loop_parameter/rows/0"] for result in results]
        self.assertAllEqual(sum(rows), [8, 8, 8, 1] * 2)
        self.assertEqual(min(worker_rows[3] for worker_rows in rows), 0)
        # distribute_datasets_from_function: one input pipeline per worker; global batches of
        # 12 rows, 12 / replicas per replica.
        for index, result in enumerate(results):
            self.assertAllEqual(
                result["custom_loop_parameter/rows/1"],
                [workers, index, 2 * workers] + [12 // (2 * workers)] * 2,
            )

    def test_two_workers_equal_each_other_and_one_device(self):
        self._check_training(2)

    def test_three_workers_equal_each_other_and_one_device(self):
        self._check_training(3)

    def test_a_killed_worker_stops_the_other_with_an_error(self):
        with _Workers("run_forever", 2) as started:
            survivor, victim = started.processes
            for line in victim.stdout:
                if "TRAINING" in line:
                    break
            victim.send_signal(signal.SIGKILL)
            output = survivor.communicate(timeout=_TIMEOUT_SECONDS)[0]
        self.assertNotEqual(survivor.returncode, 0)
        self.assertRegex(output, "Collective ops is aborted|unhealthy|UnavailableError")

    def test_workers_that_disagree_fail_naming_the_disagreement(self):
        with _Workers("disagree", 2) as started:
            outputs = started.outputs()
        for process, output in zip(started.processes, outputs, strict=True):
            self.assertNotEqual(process.returncode, 0, output[-2000:])
            self.assertIn("the workers disagree on the strategy's settings", output)
            self.assertIn('"mirror_weights": true', output)
            self.assertNotIn("NOT REACHED", output)

    def test_a_port_in_use_is_named(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        tf_config = {"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}}
        try:
            result = subprocess.run(
                [sys.executable, _WORKER, "start"],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_SECONDS,
                env=dict(
                    os.environ,
                    PYTHONPATH=_REPOSITORY,
                    TF_CONFIG=json.dumps(tf_config),
                    TF_CPP_MIN_LOG_LEVEL="2",
                ),
            )
        finally:
            taken.close()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"could not start its server at {address}", result.stderr)


def _resolver(cluster, task_type, task_id):
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )


class ClusterCheckTest(tf.test.TestCase):
    """Checks that fail before any server starts: they run in this process."""

    def test_ps_and_evaluator_tasks_are_named(self):
        cluster = {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"], "evaluator": ["127.0.0.1:3"]}
        with self.assertRaisesRegex(ValueError, r"also has \['evaluator', 'ps'\]"):
            replica_strategy.MultiWorkerReplicaStrategy(
                cluster_resolver=_resolver(cluster, "worker", 0)
            )

    def test_a_cluster_without_a_task_is_named(self):
        with self.assertRaisesRegex(ValueError, "has a cluster but no task"):
            replica_strategy.MultiWorkerReplicaStrategy(
                cluster_resolver=_resolver({"worker": ["127.0.0.1:1"]}, None, None)
            )

    def test_a_task_index_out_of_range_is_named(self):
        cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
        with self.assertRaisesRegex(ValueError, "task worker:2 is not in its cluster"):
            replica_strategy.MultiWorkerReplicaStrategy(
                cluster_resolver=_resolver(cluster, "worker", 2)
            )

    def test_a_heartbeat_timeout_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, "heartbeat_timeout_seconds=0"):
            replica_strategy.MultiWorkerReplicaStrategy(heartbeat_timeout_seconds=0)

    def test_without_tf_config_it_is_replica_strategy(self):
        os.environ.pop("TF_CONFIG", None)
        devices = ["/cpu:0", "/cpu:1"]
        weights = []
        for strategy in (
            replica_strategy.MultiWorkerReplicaStrategy(devices),
            replica_strategy.ReplicaStrategy(devices),
        ):
            self.assertEqual(strategy.num_replicas_in_sync, 2)
            with strategy.scope():
                model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
                model.compile(optimizer="sgd", loss="mse")
            model.set_weights([np.ones((3, 1), "float32"), np.zeros(1, "float32")])
            x = np.arange(30, dtype="float32").reshape(10, 3) / 30
            model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0)
            weights.append(model.get_weights())
        self.assertEqual(
            replica_strategy.MultiWorkerReplicaStrategy(devices).extended.num_workers, 1
        )
        for multi_worker, single in zip(*weights, strict=True):
            self.assertAllEqual(multi_worker, single)


if __name__ == "__main__":
    tf.test.main()
