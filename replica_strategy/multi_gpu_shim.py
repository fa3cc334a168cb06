"""`multi_gpu_model`, Keras' legacy data-parallel call, as a thin shim over `ReplicaStrategy`.

The legacy function received a template model whose variables already existed and called it
once per GPU. tf.distribute needs a model's variables to be created inside the strategy's
scope, so the shim clones the template in `ReplicaStrategy.scope()` and, while the clone is
built, hands it the template's own variables (wrapped as the strategy's parameter variables)
instead of new ones: the parallel model and the template share one storage per weight, so the
template holds the trained weights after every update, as the legacy model did.

Works for Keras 3 (`keras`, `tf.keras`) and tf_keras models: functional, Sequential, and
subclassed models that implement `get_config`. Its models get the exact uneven-split gradient
of `uneven_batches` automatically, and tf_keras models the allow-list registration of
`tf_keras_support`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import tensorflow as tf

from replica_strategy import _keras3_trainer, _row_weights, tf_keras_support
from replica_strategy import devices as devices_lib
from replica_strategy.strategy import ReplicaStrategy

if TYPE_CHECKING:
    import keras
    import tf_keras

    KerasModel = keras.Model | tf_keras.Model

_ON_READ = tf.VariableSynchronization.ON_READ
_ON_WRITE = tf.VariableSynchronization.ON_WRITE


def multi_gpu_model(
    model: KerasModel,
    gpus: int | Sequence[int | str] | None = None,
    cpu_merge: bool = True,
    cpu_relocation: bool = False,
) -> KerasModel:
    """Replicates `model` on several devices; returns a model used just like `model`.

    Each batch given to the returned model is split into contiguous sub-batches, one per device;
    each device runs the model on its sub-batch; outputs are concatenated back in the original
    order, gradients summed into the one copy of the weights. The returned model SHARES its
    weights with `model`: after every training step `model` holds the trained weights, so
    `model.save(...)` works at any time, and so does `parallel_model.save(...)`, whose file
    loads into a plain single-device model.

    ```python
    template = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    parallel_model = multi_gpu_model(template, gpus=["/cpu:0", "/cpu:1"])
    parallel_model.compile(loss="mse", optimizer="rmsprop")
    parallel_model.fit(x, y, epochs=2, batch_size=256)  # 128 rows per device and step.
    template.save("my_model.keras")  # The trained weights.
    ```

    Args:
      model: a built Keras 3 or tf_keras model (functional, Sequential, or subclassed with
        `get_config`): the template.
      gpus: an int >= 2 (GPUs 0 .. gpus-1), a list of >= 2 GPU ids (need not be contiguous),
        a list of >= 2 device names (e.g. ["/cpu:0", "/cpu:1"] for logical CPUs), or None for
        every GPU of the machine.
      cpu_merge: merge outputs and gradients on the CPU (True) or on the first replica's
        device (False).
      cpu_relocation: move the template's weights to the CPU first (sharing is kept and no
        weight is re-initialised). Without it the weights stay where the template created them.

    Returns:
      A Keras model (of the template's library) built in a `ReplicaStrategy` scope, with the
      template's input and output names. Call `compile`, `fit`, `predict`, `save` on it as usual;
      its `distribute_strategy` is the `ReplicaStrategy`.

    Raises:
      ValueError: for fewer than 2 devices, a duplicate, missing or other machine's device, a
        model with a stateful RNN or an output without a batch axis, or an unbuilt model.
    """
    devices = resolve_gpus(gpus)
    keras_module = _keras_module_of(model)
    _check_replicable(model)
    strategy = ReplicaStrategy(devices, merge_device=None if cpu_merge else devices[0])
    if _is_tf_keras(keras_module):
        tf_keras_support.register_tf_keras()
    if cpu_relocation:
        _relocate_weights(model, strategy.parameter_device, keras_module)
    parallel = _clone_sharing_weights(model, strategy, keras_module)
    if _is_tf_keras(keras_module):
        _row_weights.ask_for_exact_rows(parallel)
    else:
        # tf_keras' compile enters the model's strategy scope itself; Keras 3's does not, and a
        # loss tracker or optimizer built outside the scope would not be distributed.
        _compile_in_scope(parallel, strategy)
        _split_on_batch_methods(parallel)
    _load_weights_in_scope(parallel, strategy)
    return parallel


# -- gpus ------------------------------------------------------------------------------------


def resolve_gpus(gpus: int | Sequence[int | str] | None) -> list[str]:
    """Turns the legacy `gpus` argument into >= 2 validated device names.

    Args:
      gpus: None, an int >= 2, or a list of >= 2 GPU ids or device-name strings.

    Returns:
      The canonical device names, one replica each, in the order given.

    Raises:
      ValueError: with the legacy wording, for fewer than 2 devices or missing devices; for a
        duplicate or a name that is not a device of this process, naming `gpus`.
    """
    # The two legacy messages below keep the wording of Keras' multi_gpu_model (TensorFlow's
    # copy, Apache-2.0): attributed in NOTICE.
    if gpus is None:
        requested = devices_lib.available_gpus()
    elif isinstance(gpus, int) and not isinstance(gpus, bool):
        requested = [f"/device:GPU:{index}" for index in range(max(gpus, 0))]
    elif isinstance(gpus, Sequence) and not isinstance(gpus, str):
        requested = [devices_lib.device_name(device, "gpus", gpus) for device in gpus]
    else:
        raise ValueError(
            "`gpus` must be an int >= 2, a list of >= 2 GPU ids or device names, or None. "
            f"Received: gpus={gpus!r}"
        )
    if len(requested) <= 1:
        raise ValueError(
            "For multi-gpu usage to be effective, call `multi_gpu_model` with `gpus >= 2` "
            f"(or `len(gpus) >= 2`). Received: gpus={gpus!r}.{_no_gpu_hint()}"
        )
    devices_lib.check_no_duplicates(requested, "gpus", gpus)
    available = devices_lib.available_devices()
    if any(device not in available for device in requested):
        raise ValueError(
            f"To call `multi_gpu_model` with `gpus={gpus!r}`, we expect the following devices "
            f"to be available: {requested}. However this machine only has: {available}. "
            f"Try reducing `gpus`.{_no_gpu_hint()}"
        )
    return requested


def _no_gpu_hint() -> str:
    """How to replicate without a GPU, for the legacy messages; empty where there are GPUs."""
    if devices_lib.available_gpus():
        return ""
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(cpus) >= 2:
        names = [devices_lib.short_name(name) for name in cpus]
        return (
            f" This machine has no GPU, and {len(cpus)} logical CPUs: pass their names, e.g. "
            f"gpus={names[:2]!r}."
        )
    return (
        " This machine has no GPU: split the CPU into logical devices before TensorFlow "
        "initializes, with replica_strategy.logical_devices.split_cpu(2), then pass their "
        "names, gpus=['/cpu:0', '/cpu:1']."
    )


# -- which Keras -----------------------------------------------------------------------------


def _keras_module_of(model):
    """The library (Keras 3 or tf_keras) `model` belongs to; raises for anything else."""
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None and isinstance(model, tf_keras.Model):
        return tf_keras
    import keras  # noqa: PLC0415  (Keras 3 is only needed once a model is given)

    if isinstance(model, keras.Model):
        return keras
    raise ValueError(
        "`multi_gpu_model` needs a Keras 3 or tf_keras `Model`. "
        f"Received: model of type {type(model).__name__}"
    )


def _is_tf_keras(keras_module) -> bool:
    return keras_module.__name__ == "tf_keras"


# -- what cannot be split --------------------------------------------------------------------


def _check_replicable(model) -> None:
    if not model.built:
        raise ValueError(
            f"`multi_gpu_model` needs a built model, so its weights exist to be shared. Model "
            f"{model.name!r} is not built: give it an Input or call `model.build(input_shape)`."
        )
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"`multi_gpu_model` cannot replicate the stateful layer {layer.name!r}: its state "
                "is kept per sample across batches, and a split batch would mix the samples of "
                "different replicas. Use `stateful=False`, or pass the state as an input "
                "(e.g. `initial_state`), which is split like every other input."
            )
    outputs = getattr(model, "outputs", None) or []
    names = list(getattr(model, "output_names", None) or [])
    for index, output in enumerate(outputs):
        if output.shape.rank == 0 if hasattr(output.shape, "rank") else len(output.shape) == 0:
            name = names[index] if index < len(names) else str(index)
            raise ValueError(
                f"`multi_gpu_model` cannot merge output {name!r}: it is a scalar, without a "
                "batch axis to concatenate replicas along. Return one value per sample "
                "(e.g. shape (batch, 1)), or compute the reduction in a loss or metric."
            )


# -- the shared clone ------------------------------------------------------------------------


def _clone(template, keras_module):
    """A fresh, built copy of `template` (new layers, same names, same structure)."""
    if _is_functional_or_sequential(template, keras_module):
        return keras_module.models.clone_model(template)
    try:
        config = template.get_config()
        clone = template.__class__.from_config(config)
    except NotImplementedError as error:
        raise ValueError(
            f"`multi_gpu_model` re-creates a subclassed model from its config; "
            f"{type(template).__name__} must implement `get_config` (and `from_config` if its "
            "constructor does not take the config's keys)."
        ) from error
    _build_like(clone, template, keras_module)
    return clone


def _is_functional_or_sequential(model, keras_module) -> bool:
    if _is_tf_keras(keras_module):
        return getattr(model, "_is_graph_network", False)
    from keras.src.models.functional import Functional  # noqa: PLC0415

    return isinstance(model, (Functional, keras_module.Sequential))


def _build_like(clone, template, keras_module) -> None:
    if clone.built:
        return
    if not _is_tf_keras(keras_module):
        build_config = template.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
            return
    spec = template.save_spec() if hasattr(template, "save_spec") else None
    if spec is None:
        raise ValueError(
            f"`multi_gpu_model` cannot tell the input shape of subclassed model "
            f"{template.name!r}: build it with `model.build(input_shape)` or call it on data first."
        )
    args, kwargs = spec
    dummy = tf.nest.map_structure(
        lambda tensor_spec: tf.zeros([1, *tensor_spec.shape[1:]], tensor_spec.dtype), args
    )
    clone(*dummy, **kwargs)


def _raw_variable(weight):
    """The tf.Variable that stores a weight (Keras 3 wraps one in a `KerasVariable`)."""
    return getattr(weight, "_value", weight)


def _creation_order(template, keras_module) -> list[int | None]:
    """For each variable the clone creates, in creation order, its index in `clone.weights`.

    Cloning is deterministic, so a throw-away clone tells how the real one will create its
    variables. `model.weights` orders them as `set_weights` expects, and templates match by it.
    """
    created = []

    def record(next_creator, **kwargs):
        variable = next_creator(**kwargs)
        created.append(variable)
        return variable

    with tf.variable_creator_scope(record):
        probe = _clone(template, keras_module)
    index_of = {id(_raw_variable(weight)): index for index, weight in enumerate(probe.weights)}
    if len(probe.weights) != len(template.weights):
        raise ValueError(
            f"`multi_gpu_model` could not match the weights of model {template.name!r}: its "
            f"clone has {len(probe.weights)} weights, the model {len(template.weights)}."
        )
    return [index_of.get(id(variable)) for variable in created]


def _clone_sharing_weights(template, strategy, keras_module):
    """Clones `template` in `strategy.scope()` so that its variables are the template's own."""
    order = _creation_order(template, keras_module)
    template_variables = [_raw_variable(weight) for weight in template.weights]
    position = iter(range(len(order)))

    def reuse_template_variable(next_creator, **kwargs):
        index = next(position, None)
        target = None if index is None or order[index] is None else order[index]
        if target is None:
            return next_creator(**kwargs)
        variable = template_variables[target]
        expected = tf.TensorShape(kwargs.get("shape") or _initial_shape(kwargs))
        if not expected.is_compatible_with(variable.shape):
            raise ValueError(
                f"`multi_gpu_model` could not share weight {variable.name!r} of shape "
                f"{variable.shape} with its clone, which expected shape {expected}."
            )
        return variable

    def one_copy_per_weight(next_creator, **kwargs):
        # Per-replica (ON_READ) weights such as tf_keras' BatchNormalization statistics could
        # not share the template's one variable: keep one copy, written once per step with the
        # replicas' mean update.
        if kwargs.get("synchronization") == _ON_READ:
            kwargs["synchronization"] = _ON_WRITE
            if kwargs.get("aggregation") in (None, tf.VariableAggregation.NONE):
                kwargs["aggregation"] = tf.VariableAggregation.MEAN
        return next_creator(**kwargs)

    with tf.variable_creator_scope(reuse_template_variable), strategy.scope():
        with tf.variable_creator_scope(one_copy_per_weight):
            return _clone(template, keras_module)


def _initial_shape(kwargs):
    initial_value = kwargs.get("initial_value")
    if callable(initial_value):
        return None
    return getattr(initial_value, "shape", None)


def _relocate_weights(template, parameter_device: str, keras_module) -> None:
    """Moves the template's weights to `parameter_device`, keeping their values and sharing."""
    target = tf.DeviceSpec.from_string(parameter_device)
    elsewhere = [
        weight for weight in template.weights if not _on_device(_raw_variable(weight), target)
    ]
    if not elsewhere:
        return
    if _is_tf_keras(keras_module):
        raise ValueError(
            "`cpu_relocation=True` cannot move the weights of a tf_keras model without "
            f"unsharing them from the template ({[w.name for w in elsewhere]} are not on "
            f"{parameter_device}). Build the template under `with tf.device('/cpu:0'):` instead."
        )
    for weight in elsewhere:
        old = weight._value  # pylint: disable=protected-access
        with tf.init_scope(), tf.device(parameter_device):
            weight._value = tf.Variable(  # pylint: disable=protected-access
                old.read_value(),
                trainable=old.trainable,
                name=old.name.split(":")[0],
                synchronization=old.synchronization,
                aggregation=old.aggregation,
            )


def _on_device(variable, target: tf.DeviceSpec) -> bool:
    spec = tf.DeviceSpec.from_string(variable.device)
    return (spec.device_type or "").upper() == (target.device_type or "").upper() and (
        spec.device_index or 0
    ) == (target.device_index or 0)


def _compile_in_scope(model, strategy) -> None:
    compile_outside_scope = model.compile

    @functools.wraps(compile_outside_scope)
    def compile(optimizer="rmsprop", *args, **kwargs):  # noqa: A001
        with strategy.scope():
            optimizer = _optimizer_in_scope(optimizer, strategy)
            result = compile_outside_scope(optimizer, *args, **kwargs)
        _row_weights.ask_for_exact_rows(model)
        _keras3_trainer.weight_losses_by_rows(model)
        return result

    # object.__setattr__: a method is not state Keras should track or save.
    object.__setattr__(model, "compile", compile)


def _optimizer_in_scope(optimizer, strategy):
    """Re-creates an optimizer made outside the strategy's scope (legacy code does), unbuilt.

    Keras 3 optimizers remember the strategy they were created under and build their slots
    through it; one from outside the scope cannot build slots for the strategy's variables.
    """
    import keras  # noqa: PLC0415

    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if getattr(optimizer, "_distribution_strategy", strategy) is strategy:
        return optimizer
    if optimizer.built:
        raise ValueError(
            f"The optimizer {optimizer.name!r} was created and used outside the parallel "
            "model's strategy, so its state cannot move there. Pass a new optimizer (or its "
            "name) to `compile`."
        )
    return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))


def _load_weights_in_scope(model, strategy) -> None:
    # Restoring assigns the strategy's variables, which must happen in its scope.
    load_weights_outside_scope = model.load_weights

    @functools.wraps(load_weights_outside_scope)
    def load_weights(*args, **kwargs):
        with strategy.scope():
            return load_weights_outside_scope(*args, **kwargs)

    object.__setattr__(model, "load_weights", load_weights)


def _split_on_batch_methods(model) -> None:
    """Makes Keras 3's `*_on_batch` methods split the batch across replicas.

    Keras 3 hands `train_on_batch`, `test_on_batch` and `predict_on_batch` data to
    `strategy.run` undistributed, so under any strategy every replica runs the WHOLE batch
    (and `predict_on_batch` returns it once per replica). The legacy model split it; these
    one-batch `fit` / `evaluate` / `predict` calls do, through the strategy's input pipeline.
    """

    def train_on_batch(x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        history = model.fit(
            x,
            y,
            sample_weight=sample_weight,
            class_weight=class_weight,
            batch_size=_batch_size(x),
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        logs = {name: values[-1] for name, values in history.history.items()}
        return logs if return_dict else _in_metric_order(model, logs)

    def test_on_batch(x, y=None, sample_weight=None, return_dict=False):
        logs = model.evaluate(
            x,
            y,
            sample_weight=sample_weight,
            batch_size=_batch_size(x),
            verbose=0,
            return_dict=True,
        )
        return logs if return_dict else _in_metric_order(model, logs)

    def predict_on_batch(x):
        return model.predict(x, batch_size=_batch_size(x), verbose=0)

    for method in (train_on_batch, test_on_batch, predict_on_batch):
        object.__setattr__(model, method.__name__, method)


def _batch_size(x) -> int:
    return max(int(tf.nest.flatten(x)[0].shape[0]), 1)


def _in_metric_order(model, logs):
    values = [logs[name] for name in model.metrics_names if name in logs]
    values += [value for name, value in logs.items() if name not in model.metrics_names]
    return values[0] if len(values) == 1 else values
