"""Splits the host CPU into logical devices so multi-replica tests run without GPUs.

Import this module, and call `configure()`, before anything else touches TensorFlow's devices:
logical devices can only be set before the runtime initializes.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

NUM_CPUS = 5  # A host device plus up to 4 replica devices.


def configure(num_cpus: int = NUM_CPUS) -> None:
    """Gives the process `num_cpus` logical CPU devices (idempotent)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpus
        )
    except RuntimeError:
        # Already initialized: fine as long as there are enough devices.
        pass
    available = len(tf.config.list_logical_devices("CPU"))
    if available < num_cpus:
        raise RuntimeError(
            f"Tests need {num_cpus} logical CPUs but TensorFlow initialized with {available}; "
            "import tests/virtual_devices.py before anything uses TensorFlow."
        )


def cpus(count: int) -> list[str]:
    """The names of the first `count` logical CPUs, e.g. ["/cpu:0", "/cpu:1"]."""
    return [f"/cpu:{index}" for index in range(count)]


def mirrored_strategy(count: int) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy on the first `count` logical CPUs, the oracle for multi-replica results.

    It reduces through one device rather than collectives: collective group keys are
    per-process, and MirroredStrategies of different sizes in one test process collide on them
    ("joining a group with size 4, but that group has size 3").
    """
    return tf.distribute.MirroredStrategy(
        cpus(count), cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


configure()
