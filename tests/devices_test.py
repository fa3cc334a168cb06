"""Tests for devices.py: the `devices`, `parameter_device`, `merge_device` and `gpus` arguments."""

import re

import tensorflow as tf
from absl.testing import parameterized

import replica_strategy
from replica_strategy import devices

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)


class ResolveDevicesTest(tf.test.TestCase, parameterized.TestCase):
    def test_device_names_are_canonical_and_keep_their_order(self):
        self.assertEqual(
            devices.resolve_devices(["/cpu:2", "CPU:0", "/device:CPU:1"]),
            ("/device:CPU:2", "/device:CPU:0", "/device:CPU:1"),
        )

    def test_none_without_gpus_falls_back_to_the_cpu_with_a_warning(self):
        with self.assertLogs(level="WARNING") as logs:
            self.assertEqual(devices.resolve_devices(None), ("/device:CPU:0",))
        self.assertIn("found no GPU", "\n".join(logs.output))

    @parameterized.named_parameters(
        ("empty_list", [], "at least one device"),
        ("bare_string", "/cpu:0", "must be None or a list"),
        ("bare_int", 2, "must be None or a list"),
        ("float_entry", ["/cpu:0", 1.5], "type float"),
        ("bool_entry", [True], "type bool"),
        ("negative_id", [-1], "GPU ids must be >= 0"),
        ("duplicate", ["/cpu:0", "cpu:0"], r"\['/device:CPU:0'\] appear more than once"),
        ("missing_gpu", [0, 1], r"does not have: \['/device:GPU:0', '/device:GPU:1'\]"),
        ("missing_cpu", ["/cpu:9"], r"Available devices: \['/device:CPU:0'"),
        ("no_device_type", ["/job:localhost"], "names no device type"),
    )
    def test_bad_devices_raise_value_error_naming_the_input(self, value, message):
        with self.assertRaisesRegex(ValueError, message):
            devices.resolve_devices(value)

    @parameterized.named_parameters(
        ("empty_list", []), ("bare_string", "/cpu:0"), ("float_entry", [1.5]), ("duplicate", [0, 0])
    )
    def test_errors_list_the_available_devices(self, value):
        with self.assertRaisesRegex(ValueError, r"Available devices: \['/device:CPU:0'"):
            devices.resolve_devices(value)

    def test_missing_device_error_says_how_to_fix_it(self):
        with self.assertRaisesRegex(ValueError, "set_logical_device_configuration"):
            devices.resolve_devices(["/gpu:3"])


class ResolveDeviceTest(tf.test.TestCase):
    def test_parameter_device_is_validated(self):
        self.assertEqual(devices.resolve_device("/cpu:1", "parameter_device"), "/device:CPU:1")
        with self.assertRaisesRegex(ValueError, "parameter_device='/gpu:0'"):
            devices.resolve_device("/gpu:0", "parameter_device")
        with self.assertRaisesRegex(ValueError, "parameter_device=0"):
            devices.resolve_device(0, "parameter_device")


def _construct(argument, value):
    """Passes `value` as `argument` of ReplicaStrategy or multi_gpu_model, the others valid."""
    if argument == "gpus":
        model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
        return replica_strategy.multi_gpu_model(model, gpus=value)
    arguments = {"devices": ["/cpu:0", "/cpu:1"], argument: value}
    return replica_strategy.ReplicaStrategy(**arguments)


# Device names that are not devices of this process, and what the error says about each.
_NOT_LOCAL_DEVICES = (
    ("other_job", "/job:foo/cpu:1", "another process"),
    ("other_replica", "/replica:1/cpu:1", "another process"),
    ("other_task", "/job:localhost/replica:0/task:2/cpu:1", "another process"),
    ("empty", "", "names no device type"),
    ("unparsable", "hello", "not a device name"),
)


class ShortNameTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        ("/job:localhost/replica:0/task:0/device:GPU:1", "/gpu:1"),
        ("/device:CPU:0", "/cpu:0"),
        ("/cpu:3", "/cpu:3"),
        ("/job:worker/replica:0/task:1/device:CPU:2", "/cpu:2"),
    )
    def test_short_name(self, name, short):
        self.assertEqual(devices.short_name(name), short)


class DeviceArgumentErrorsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        (f"{argument}_{name}", argument, device, message)
        for argument in ("devices", "parameter_device", "merge_device", "gpus")
        for name, device, message in _NOT_LOCAL_DEVICES
    )
    def test_error_names_the_argument_and_echoes_it_as_passed(self, argument, device, message):
        # A list argument gets the bad name beside a good one; the error repeats the list.
        value = ["/cpu:0", device] if argument in ("devices", "gpus") else device
        with self.assertRaisesRegex(
            ValueError, f"{message}.*Received: {re.escape(f'{argument}={value!r}')}"
        ):
            _construct(argument, value)

    def test_duplicate_gpus_are_reported_as_passed(self):
        with self.assertRaises(ValueError) as raised:
            _construct("gpus", ["/cpu:0", "/device:CPU:0"])
        message = str(raised.exception)
        self.assertIn("appear more than once in `gpus`", message)
        self.assertIn("Received: gpus=['/cpu:0', '/device:CPU:0']", message)
        self.assertNotIn("devices=", message)

    def test_devices_of_this_process_may_name_its_job(self):
        strategy = replica_strategy.ReplicaStrategy(
            ["/job:localhost/replica:0/task:0/cpu:0", "/job:localhost/cpu:1"],
            parameter_device="/job:localhost/replica:0/task:0/device:CPU:2",
            merge_device="/job:localhost/cpu:3",
        )
        self.assertEqual(strategy.num_replicas_in_sync, 2)
        self.assertEqual(strategy.parameter_device, "/device:CPU:2")
        self.assertEqual(strategy.merge_device, "/device:CPU:3")


if __name__ == "__main__":
    tf.test.main()
