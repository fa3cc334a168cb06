"""Former home of the Keras helpers, kept so that old imports work.

Up to 0.1.0 this module held all three; now each has its own module (CHANGELOG.md), and the
package exports the public names itself (`replica_strategy.multi_gpu_model`, ...):

- `multi_gpu_model`: `replica_strategy.multi_gpu_shim`;
- `exact_uneven_batches`: `replica_strategy.uneven_batches`;
- `register_tf_keras`: `replica_strategy.tf_keras_support`.
"""

from replica_strategy.multi_gpu_shim import multi_gpu_model
from replica_strategy.tf_keras_support import register_tf_keras
from replica_strategy.uneven_batches import exact_uneven_batches

__all__ = ["exact_uneven_batches", "multi_gpu_model", "register_tf_keras"]
