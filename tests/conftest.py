"""pytest set-up: logical CPUs before TensorFlow initializes; absl flags marked parsed."""

import os
import sys

import pytest
from absl import flags

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from tensorflow.python.framework import config as tf_config  # noqa: E402

import virtual_devices  # noqa: E402, F401  (configures logical CPUs on import)

# absl-based code (tf.test, example trainers) reads flags; pytest owns argv.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@pytest.fixture(autouse=True)
def _op_determinism_as_before():
    """Turns op determinism back off after a test whose trainer `main()` turned it on.

    The trainers enable it for the whole process; later tests would then fail on any unseeded
    random op ("Random ops require a seed to be set when determinism is enabled").
    """
    was_enabled = tf_config.is_op_determinism_enabled()
    yield
    if not was_enabled and tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


# Tearing TensorFlow down at interpreter exit, after a suite that leaves many tf.data iterators
# alive (multi-device iterators' background threads), took minutes here. pytest has written its
# report by then and nothing else is left to flush: leave at once, with pytest's exit status.
_exit_status = None


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _exit_status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
