"""Deprecated: import from `replica_strategy` itself.

Up to 0.1.0 this module held the Keras helpers; now each has its own module (CHANGELOG.md), and
the package exports the public names itself. Importing this module warns, naming the
replacement; it will be removed in a later minor version.

- `multi_gpu_model`: `replica_strategy.multi_gpu_model`;
- `exact_uneven_batches`: `replica_strategy.exact_uneven_batches`;
- `register_tf_keras`: `replica_strategy.register_tf_keras`.
"""

import warnings

from replica_strategy.multi_gpu_shim import multi_gpu_model
from replica_strategy.tf_keras_support import register_tf_keras
from replica_strategy.uneven_batches import exact_uneven_batches

__all__ = ["exact_uneven_batches", "multi_gpu_model", "register_tf_keras"]

warnings.warn(
    "replica_strategy.keras_compat is deprecated and will be removed: import multi_gpu_model, "
    "exact_uneven_batches and register_tf_keras from replica_strategy "
    "(from replica_strategy import multi_gpu_model).",
    DeprecationWarning,
    stacklevel=2,
)
