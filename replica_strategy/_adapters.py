"""Where replica_strategy adapts Keras and tf_keras, all installed from one place.

tf.distribute offers hooks for what a strategy does (variables, replicas, reductions, input);
Keras decides a few things about distributed training in its own code, where no hook reaches.
Each adaptation lives in a small module named for the upstream code it adapts, acts only
inside a `ReplicaStrategy` (other strategies pass straight through), and is listed, with the
test that fails if upstream moves it, in docs/development.md ("Upstream internals"):

- `_keras3_trainer`: Keras 3's build from the first batch; row weighting of the loss;
- `_keras3_optimizer`: Keras 3 clips the summed gradient, not each replica's;
- `_keras3_loss_scale`: Keras 3's loss scaling skips a step that overflows on any replica;
- `_keras3_multi_worker`: Keras 3 gathers `predict` and reduces logs across workers under
  `MultiWorkerReplicaStrategy`, as under MultiWorkerMirroredStrategy;
- `_tf_keras_optimizer`: tf_keras optimizers told not to aggregate gradients;
- `_tf_keras_training`: tf_keras' row weighting of the loss;
- `tf_keras_support`: tf_keras' strategy allow-lists (mixed precision, BackupAndRestore).

`install` runs when a `ReplicaStrategy` is made and each time its scope is entered, so a
tf_keras imported later is adapted too; each module installs itself once.
"""

from __future__ import annotations

import sys

from replica_strategy import (
    _keras3_loss_scale,
    _keras3_multi_worker,
    _keras3_optimizer,
    _keras3_trainer,
    _tf_keras_optimizer,
    _tf_keras_training,
    tf_keras_support,
)


def accept(strategy_class) -> None:
    """Names the strategy class that tf_keras' allow-lists are to accept."""
    tf_keras_support.accept(strategy_class)


def install() -> None:
    """Installs every adaptation whose upstream is imported (cheap once done)."""
    _keras3_trainer.install()
    _keras3_optimizer.install()
    _keras3_loss_scale.install()
    _keras3_multi_worker.install()
    if "tf_keras" in sys.modules:
        _tf_keras_optimizer.install()
        _tf_keras_training.install()
        tf_keras_support.register_tf_keras()
