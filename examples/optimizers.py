"""`--optimizer`: Keras' Adam or `replica_strategy.FusedAdam`, and a final model Keras loads.

Both hold the same slots under the same names, so a checkpoint of one restores into the other.
A `.keras` file, though, names each class from outside Keras that it holds, and only a process
that has imported that class loads it with its optimizer (docs/keras.md): `save_model` saves a
model trained with FusedAdam with the Keras Adam it equals.
"""

from __future__ import annotations

import keras

import replica_strategy

OPTIMIZERS = ("adam", "fused_adam")


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """`keras.optimizers.Adam` ("adam") or `replica_strategy.FusedAdam` ("fused_adam").

    Call it inside the strategy's scope, like the model.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "fused_adam":
        return replica_strategy.FusedAdam(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.")


def save_model(model: keras.Model, path: str) -> None:
    """Saves `model` to `path` (a `.keras` file) so that Keras alone loads it; call it last.

    A compiled-in FusedAdam is first replaced by the `keras.optimizers.Adam` it equals: the same
    config, its state copied over (the same variables in the same order); the model is compiled
    again with that Adam and its own loss and metrics.
    """
    fused = getattr(model, "optimizer", None)
    if isinstance(fused, replica_strategy.FusedAdam):
        with model.distribute_strategy.scope():
            arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
            adam = keras.optimizers.Adam.from_config(fused.get_config())
            model.compile(**(arguments | {"optimizer": adam}))
            adam.build(model.trainable_variables)
            for adam_variable, fused_variable in zip(adam.variables, fused.variables, strict=True):
                adam_variable.assign(fused_variable)
    model.save(path)
