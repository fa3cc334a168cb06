"""Runs Keras 3's own tf.distribute tests, vendored verbatim in ./src/, on ReplicaStrategy.

The vendored files stay byte-identical to upstream (UPSTREAM.md says how to check); everything
this project changes is here and in the `upstream_*_test.py` runners beside it.

Upstream's tests build `tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])` in each test, after
a set-up that resets TensorFlow's context and splits the CPU into two logical devices.
`load(path)` imports a vendored file and gives it, in place of its module-level `tf` and
`context`, two stand-ins that forward everything to TensorFlow except:
- `tf.distribute.MirroredStrategy(devices)`: ReplicaStrategy on as many replicas, in the
  running test's placement of tests/placements.py (`PlacementCase` sets it);
- `context._reset_context()` and `tf.config.set_logical_device_configuration(...)`: nothing.
  The process has its logical CPUs already (tests/virtual_devices.py), and resetting the
  context in the middle of a test session would drop every other test's devices and
  variables.
"""

import importlib.util
import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _TESTS not in sys.path:  # Under Bazel; under pytest, tests/conftest.py has added it.
    sys.path.insert(0, _TESTS)

import virtual_devices  # noqa: E402, F401  (logical CPUs before TensorFlow initializes)

# isort: split

import tensorflow as tf  # noqa: E402
from tensorflow.python.eager import context as tf_context  # noqa: E402

import placements  # noqa: E402

UPSTREAM = "keras-team/keras"
UPSTREAM_COMMIT = "3422977a5e38fb2f7709aaa9a08e47f0c43d0f60"
_HERE = os.path.dirname(os.path.abspath(__file__))

_placement = placements.DEFAULT  # The running test's; set by PlacementCase.setUp.


class _Forwarding:
    """Forwards every attribute to `target` but those set on the instance."""

    def __init__(self, target, **overrides):
        self._target = target
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._target, name)


def _replica_strategy(devices=None, **kwargs):
    # ReplicaStrategy: was MirroredStrategy(["CPU:0", "CPU:1"]); as many replicas, in the
    # running test's placement.
    if kwargs:
        raise TypeError(f"The adapter builds ReplicaStrategy from devices only; got {kwargs}.")
    return placements.replica_strategy(_placement, len(devices) if devices else 2)


def _nothing(*args, **kwargs):
    return None


_TF = _Forwarding(
    tf,
    distribute=_Forwarding(tf.distribute, MirroredStrategy=_replica_strategy),
    config=_Forwarding(tf.config, set_logical_device_configuration=_nothing),
)
_CONTEXT = _Forwarding(tf_context, _reset_context=_nothing)


def load(path):
    """Imports the vendored `path` (e.g. "src/callbacks/swap_ema_weights_test.py", upstream keras/src/...)."""
    name = "upstream_" + path.removesuffix(".py").replace("/", ".")
    spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, path))
    module = importlib.util.module_from_spec(spec)
    dont_write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # No __pycache__ beside the vendored files.
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
    module.tf, module.context = _TF, _CONTEXT
    return module


class PlacementCase(placements.PlacementTestCase):
    """Mixin for runner classes: the strategies of the running test are in its placement."""

    def setUp(self):
        global _placement
        _placement = self.placement
        super().setUp()
