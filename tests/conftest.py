"""pytest set-up: logical CPUs before TensorFlow initializes; absl flags marked parsed."""

import sys

from absl import flags

sys.path.insert(0, __file__.rsplit("/", 1)[0])

import virtual_devices  # noqa: E402, F401  (configures logical CPUs on import)

# absl-based code (tf.test, example trainers) reads flags; pytest owns argv.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
