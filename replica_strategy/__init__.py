"""replica_strategy: Keras' `multi_gpu_model`, back as a `tf.distribute.Strategy`."""

# First, so that a missing or unsupported TensorFlow is reported with what to install.
from replica_strategy import _tensorflow_check  # noqa: F401

# isort: split

from replica_strategy import logical_devices, multi_worker, strategies
from replica_strategy.fused_adam import FusedAdam
from replica_strategy.multi_gpu_shim import multi_gpu_model
from replica_strategy.multi_worker_replica import MultiWorkerReplicaStrategy
from replica_strategy.strategy import ReplicaStrategy
from replica_strategy.tf_keras_support import register_tf_keras
from replica_strategy.uneven_batches import exact_uneven_batches
from replica_strategy.version import __version__

__all__ = [
    "FusedAdam",
    "MultiWorkerReplicaStrategy",
    "ReplicaStrategy",
    "__version__",
    "exact_uneven_batches",
    "logical_devices",
    "multi_gpu_model",
    "multi_worker",
    "register_tf_keras",
    "strategies",
]
