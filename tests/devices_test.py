"""Tests for devices.py: the `devices` and `parameter_device` arguments."""

import tensorflow as tf
from absl.testing import parameterized

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
        ("no_device_type", ["/job:localhost"], "must name a device type"),
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


if __name__ == "__main__":
    tf.test.main()
