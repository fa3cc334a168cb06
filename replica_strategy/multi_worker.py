"""TensorFlow's `MultiWorkerMirroredStrategy`, with `reduce` as Keras 3's `fit` calls it."""

from __future__ import annotations

import tensorflow as tf


class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3's `fit` can train with.

    Across two or more workers, Keras 3's `fit` calls `reduce` on a tuple (its build-time
    reduce of the first batch) and with `axis=0` on scalar losses and metrics; TensorFlow's
    multi-worker `reduce` takes neither (keras-team/keras#20585). This `reduce` walks nested
    structures and reduces each scalar with `axis=None`; everything else is TensorFlow's own
    engine, so it is a drop-in replacement:

    ```python
    strategy = replica_strategy.multi_worker.KerasMultiWorkerMirroredStrategy()  # TF_CONFIG
    with strategy.scope():
        model = make_model()
    model.fit(dataset)
    ```
    """

    def reduce(self, reduce_op, value, axis=None):
        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return super(KerasMultiWorkerMirroredStrategy, self).reduce(
                reduce_op, leaf, None if rank == 0 else axis
            )

        return tf.nest.map_structure(reduce_leaf, value)
