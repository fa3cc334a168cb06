"""Adapts Keras 3's multi-worker test (`keras.src.backend.tensorflow.trainer`) to
`MultiWorkerReplicaStrategy`.

Keras 3 reduces the per-replica outputs of `fit`, `evaluate` and `predict` steps in
`reduce_per_replica`, which asks `_collective_all_reduce_multi_worker(strategy)`: true only for
`tf.distribute.MultiWorkerMirroredStrategy` in multi-worker mode. Then `predict` gathers every
worker's rows (`strategy.gather`, reordered as TensorFlow's auto-sharding dealt them) and the
logs are reduced across workers (`strategy.reduce`); otherwise each worker keeps its own. The
wrapper answers true for a `MultiWorkerReplicaStrategy` with several workers too, whose input
pipeline is MultiWorkerMirroredStrategy's, so Keras' reordering applies unchanged.

Installed on the module once (`install`). Tested by
`tests/multi_worker_replica_test.py` (predict returns every worker's rows in dataset order) and
`tests/adapters_test.py`.
"""

from __future__ import annotations

import functools

from replica_strategy._extended import ReplicaExtended

_INSTALLED_MARK = "_replica_strategy_multi_worker"


def install() -> None:
    """Wraps `trainer._collective_all_reduce_multi_worker` (idempotent)."""
    from keras.src.backend.tensorflow import trainer  # noqa: PLC0415

    is_multi_worker = trainer._collective_all_reduce_multi_worker
    if getattr(is_multi_worker, _INSTALLED_MARK, False):
        return

    @functools.wraps(is_multi_worker)
    def _collective_all_reduce_multi_worker(strategy):
        extended = getattr(strategy, "extended", None)
        if isinstance(extended, ReplicaExtended):
            return getattr(extended, "num_workers", 1) > 1
        return is_multi_worker(strategy)

    setattr(_collective_all_reduce_multi_worker, _INSTALLED_MARK, True)
    trainer._collective_all_reduce_multi_worker = _collective_all_reduce_multi_worker
