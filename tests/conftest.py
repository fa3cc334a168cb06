"""pytest set-up: logical CPUs before TensorFlow initializes; absl flags marked parsed."""

import os
import sys

import pytest
from absl import flags

sys.path.insert(0, __file__.rsplit("/", 1)[0])

import virtual_devices  # noqa: E402, F401  (configures logical CPUs on import)

# absl-based code (tf.test, example trainers) reads flags; pytest owns argv.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


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
