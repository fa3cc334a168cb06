"""Tests for logical_devices.py: splitting the host CPU into logical devices."""

import os
import subprocess
import sys
import textwrap

import virtual_devices  # First: it gives the process its logical CPUs before TF initializes.

# isort: split

import tensorflow as tf

from replica_strategy import logical_devices

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SplitCpuTest(tf.test.TestCase):
    def test_names(self):
        self.assertEqual(logical_devices.cpu_names(3), ["/cpu:0", "/cpu:1", "/cpu:2"])

    def test_a_fresh_process_gets_the_devices_asked_for(self):
        script = textwrap.dedent(
            """
            import tensorflow as tf
            from replica_strategy import logical_devices

            print(logical_devices.split_cpu(3))
            print(len(tf.config.list_logical_devices("CPU")))
            print(logical_devices.split_cpu(2))  # Initialized now: uses what exists.
            """
        )
        run = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2"),
            check=False,
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        self.assertEqual(
            run.stdout.splitlines(),
            ["['/cpu:0', '/cpu:1', '/cpu:2']", "3", "['/cpu:0', '/cpu:1']"],
        )

    def test_an_initialized_process_with_enough_devices_uses_them(self):
        self.assertEqual(logical_devices.split_cpu(2), virtual_devices.cpus(2))

    def test_more_than_an_initialized_process_has_is_an_error_naming_both(self):
        with self.assertRaisesRegex(
            RuntimeError,
            rf"50 logical CPUs were asked for, but TensorFlow already initialized with "
            rf"{virtual_devices.NUM_CPUS}.*Received: count=50",
        ):
            logical_devices.split_cpu(50)

    def test_a_count_below_one_is_refused(self):
        for count in (0, -1, 2.0, True):
            with self.assertRaisesRegex(ValueError, "Received: count="):
                logical_devices.split_cpu(count)


if __name__ == "__main__":
    tf.test.main()
