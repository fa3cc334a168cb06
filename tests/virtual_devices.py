"""Splits the host CPU into logical devices so multi-replica tests run without GPUs.

Import this module, and call `configure()`, before anything else touches TensorFlow's devices:
logical devices can only be set before the runtime initializes.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from replica_strategy import logical_devices  # noqa: E402

NUM_CPUS = 5  # A host device plus up to 4 replica devices.


def configure(num_cpus: int = NUM_CPUS) -> None:
    """Gives the process `num_cpus` logical CPU devices, each able to run alongside the others.

    A CPU kernel runs on the runtime's inter-op thread that calls it, and TensorFlow makes one
    such thread per core. With more replicas than cores, a replica that blocks (a sleep that
    stands for a slower device) would hold a thread the other replicas wait for, and every
    measured time would include that wait. One thread per logical device, on top of the
    cores' own, lets the replicas run side by side, as GPUs' streams do. Idempotent.
    """
    tf.config.threading.set_inter_op_parallelism_threads(num_cpus + (os.cpu_count() or 1))
    logical_devices.split_cpu(num_cpus)


def cpus(count: int) -> list[str]:
    """The names of the first `count` logical CPUs, e.g. ["/cpu:0", "/cpu:1"]."""
    return logical_devices.cpu_names(count)


def mirrored_strategy(count: int) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy on the first `count` logical CPUs, the oracle for multi-replica results.

    It sums through one device (`ReductionToOneDevice`): every replica's value added in one
    place, in replica order, the simplest sum to compare with.
    """
    return tf.distribute.MirroredStrategy(
        cpus(count), cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


configure()
