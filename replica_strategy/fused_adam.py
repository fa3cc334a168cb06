"""`FusedAdam`: Keras 3's Adam, each dense update one fused TensorFlow kernel."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="replica_strategy")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose update of a dense gradient is one fused kernel.

    Keras 3's Adam updates each variable with a chain of about ten element-wise TensorFlow ops
    (subtract, multiply, square, sqrt, divide, three assigns, ...), each a pass over memory.
    This subclass hands the same update to TensorFlow's `ResourceApplyAdam` kernel (the one
    tf_keras' legacy Adam runs), which reads the weights, the gradient and both slots once and
    writes the weights and slots once. That matters where the update runs on a CPU: with
    `ReplicaStrategy`, whose weights and optimizer state live on the host, the update is part
    of every step, and `benchmarks/host_update.py` measures this one at about a third of
    Keras' time (docs/placement.md, benchmarks/SCALING.md).

    Everything else is Keras' Adam: the arguments, the formula (the same sequence of roundings
    is not promised: results agree to float32 rounding, about 1e-6 relative after a few steps),
    the slot variables and their names, so a checkpoint of either optimizer restores into the
    other; gradient clipping, EMA, loss scaling and gradient accumulation happen around the
    update as in Keras. `weight_decay` (AdamW's) is applied as Keras does, but in the same
    update as Adam's step, so that with `mirror_weights` the new weights go to the replicas
    once per step, not twice. Two cases take Keras' own update: sparse gradients
    (`tf.IndexedSlices`, from an `Embedding`), which it applies to the rows they name only, and
    `amsgrad=True`, whose fused kernel XLA cannot compile (`jit_compile=True` is Keras' default
    on a GPU without a strategy). It works under any strategy, or none, with or without XLA.

    ```python
    with strategy.scope():
        model.compile(optimizer=replica_strategy.FusedAdam(1e-3), loss="mse")
    ```
    """

    def _apply_weight_decay(self, variables):
        # Keras decays every variable in an update of its own before the optimizer's update.
        # Under `ReplicaStrategy(mirror_weights=True)` every update of a variable sends its new
        # value to the replicas, so the decay is applied inside `update_step` instead: the same
        # ops in the same order, one send.
        del variables

    def update_step(self, gradient, variable, learning_rate):
        self._decay_weight(variable, learning_rate)
        if isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            # Keras' own update: it touches only the rows a sparse gradient names, and XLA
            # (`jit_compile=True`, Keras' default on a GPU without a strategy) has no kernel for
            # `ResourceApplyAdamWithAmsgrad`.
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype

        def as_dtype(value):
            return tf.cast(value, dtype)

        local_step = as_dtype(self.iterations + 1)
        arguments = dict(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(as_dtype(self.beta_1), local_step),
            beta2_power=tf.pow(as_dtype(self.beta_2), local_step),
            lr=as_dtype(learning_rate),
            beta1=as_dtype(self.beta_1),
            beta2=as_dtype(self.beta_2),
            epsilon=as_dtype(self.epsilon),
            grad=as_dtype(gradient),
        )
        return tf.raw_ops.ResourceApplyAdam(**arguments)

    def _decay_weight(self, variable, learning_rate):
        """What Keras' `_apply_weight_decay` does to one variable."""
        if self.weight_decay is None or not self._use_weight_decay(variable):
            return
        learning_rate = tf.cast(learning_rate, variable.dtype)
        weight_decay = tf.cast(self.weight_decay, variable.dtype)
        self.assign_sub(variable, variable * weight_decay * learning_rate)


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable, for the device being updated.

    Inside a strategy's update, a distributed variable's `handle` is the copy being updated.
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle
