"""replica_strategy: Keras' `multi_gpu_model`, back as a `tf.distribute.Strategy`."""

from replica_strategy.keras_compat import multi_gpu_model
from replica_strategy.strategy import ReplicaStrategy
from replica_strategy.version import __version__

__all__ = ["ReplicaStrategy", "multi_gpu_model", "__version__"]
