"""replica_strategy: Keras' `multi_gpu_model`, back as a `tf.distribute.Strategy`."""

from replica_strategy.strategy import ReplicaStrategy
from replica_strategy.version import __version__

__all__ = ["ReplicaStrategy", "__version__"]
