"""What `benchmark.py` measures: the strategies side by side, the models, and their variables.

A contestant is a strategy at a device count. The single-device ones (no strategy,
`OneDeviceStrategy`) run once; the data-parallel ones (`ReplicaStrategy` in each mode,
`MirroredStrategy`, `CentralStorageStrategy`) run at every device count, on logical CPUs
"/cpu:0" ... "/cpu:N-1". `ReplicaStrategy(mirror_weights=True)` is a contestant when the
installed `replica_strategy` has that mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator, Sequence

import tensorflow as tf

import replica_strategy
from benchmarks.placements import Strategy, find
from replica_strategy import devices as devices_lib
from replica_strategy import logical_devices, strategies

NO_STRATEGY = Strategy.NO_STRATEGY
ONE_DEVICE = Strategy.ONE_DEVICE
REPLICA = Strategy.REPLICA
MIRROR_WEIGHTS = Strategy.MIRROR_WEIGHTS
MIRRORED = Strategy.MIRRORED
CENTRAL_STORAGE = Strategy.CENTRAL_STORAGE
HAS_MIRROR_WEIGHTS = (
    "mirror_weights" in inspect.signature(replica_strategy.ReplicaStrategy).parameters
)
SINGLE_DEVICE_NAMES = (NO_STRATEGY, ONE_DEVICE)
REPLICA_NAMES = (REPLICA, MIRROR_WEIGHTS) if HAS_MIRROR_WEIGHTS else (REPLICA,)
DATA_PARALLEL_NAMES = (*REPLICA_NAMES, MIRRORED, CENTRAL_STORAGE)
NAMES = SINGLE_DEVICE_NAMES + DATA_PARALLEL_NAMES
MODEL_NAMES = ("cnn", "mlp")
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Contestant:
    """A strategy at a device count.

    Attributes:
        name: One of `NAMES`.
        device_count: How many logical CPUs its replicas use.
    """

    name: str
    device_count: int

    @property
    def label(self) -> str:
        """A short display name, e.g. "MirroredStrategy x2"."""
        if self.name in SINGLE_DEVICE_NAMES:
            return self.name
        return f"{self.name} x{self.device_count}"


def contestants(device_counts: Sequence[int], names: Sequence[str] = NAMES) -> list[Contestant]:
    """The contestants to measure: single-device ones once, data-parallel ones per count.

    Args:
        device_counts: Logical CPU counts for the data-parallel strategies, e.g. (1, 2, 4).
        names: Which strategies to include, from `NAMES`.

    Returns:
        The contestants, single-device ones first.
    """
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"Unknown contestants {unknown}; expected names from {list(NAMES)}.")
    chosen = [Contestant(name, 1) for name in SINGLE_DEVICE_NAMES if name in names]
    for count in device_counts:
        chosen += [Contestant(name, count) for name in DATA_PARALLEL_NAMES if name in names]
    return chosen


def make_strategy(
    contestant: Contestant, devices: Sequence[str] | None = None, **replica_options: object
) -> tf.distribute.Strategy | None:
    """The contestant's strategy, or None for no strategy.

    Its replicas run on `devices`, by default the first `contestant.device_count` logical CPUs;
    ReplicaStrategy's parameter device is "/cpu:0" either way. `make_strategy` of
    `replica_strategy.strategies` builds it, so that every MirroredStrategy in the process gets
    collective keys of its own. `replica_options` are further `ReplicaStrategy` arguments
    (`split=...`), for its contestants only.
    """
    strategy = find(Strategy, contestant.name)
    if strategy is None:
        raise ValueError(f"Unknown contestant {contestant.name!r}; expected one of {list(NAMES)}.")
    if strategy.library_name is None:
        return None
    devices = list(devices or logical_devices.cpu_names(contestant.device_count))
    return strategies.make_strategy(
        strategy.library_name, devices, **strategy.replica_options, **replica_options
    )


def scope(strategy: tf.distribute.Strategy | None):
    """`strategy.scope()`, or a no-op context for no strategy."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def input_shape(model_name: str) -> tuple[int, ...]:
    """The shape of one input sample of `model_name`."""
    return {"cnn": (16, 16, 3), "mlp": (256,)}[model_name]


def build_model(model_name: str, width: int = 1024, layers: int = 2) -> tf.keras.Model:
    """A classifier without BatchNormalization, Dropout or metrics, so every strategy runs it.

    Args:
        model_name: "cnn" (two small convolutions) or "mlp" (`layers` Dense layers of `width`).
        width: Units of each hidden Dense layer of the MLP.
        layers: Hidden Dense layers of the MLP.

    Returns:
        A compiled model (SGD with momentum, sparse categorical cross-entropy on logits).
    """
    keras = tf.keras
    if model_name == "cnn":
        hidden = [
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    elif model_name == "mlp":
        hidden = [keras.layers.Dense(width, activation="relu") for _ in range(layers)]
    else:
        raise ValueError(f"Unknown model {model_name!r}; expected one of {list(MODEL_NAMES)}.")
    model = keras.Sequential(
        [keras.Input(input_shape(model_name)), *hidden, keras.layers.Dense(NUM_CLASSES)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.001, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def synthetic_batch(model_name: str, batch_size: int, seed: int = 0):
    """One random (features, labels) batch for `model_name`."""
    generator = tf.random.Generator.from_seed(seed)
    features = generator.normal((batch_size, *input_shape(model_name)))
    labels = generator.uniform((batch_size,), maxval=NUM_CLASSES, dtype=tf.int32)
    return features, labels


@contextlib.contextmanager
def recording_variables() -> Iterator[list[tf.Variable]]:
    """Records every underlying variable created inside the block.

    Enter it OUTSIDE `strategy.scope()`: the strategy's creator runs first and asks this one for
    each copy it makes, so a MirroredVariable shows up as its N per-replica variables and a
    `ReplicaStrategy` parameter as its one variable.

    Yields:
        The list the created variables are appended to.
    """
    created: list[tf.Variable] = []

    def creator(next_creator: Callable[..., tf.Variable], **kwargs) -> tf.Variable:
        variable = next_creator(**kwargs)
        created.append(variable)
        return variable

    with tf.variable_creator_scope(creator):
        yield created


def variable_bytes_per_device(variables: Sequence[tf.Variable]) -> dict[str, int]:
    """{device, e.g. "/cpu:1": bytes of the distinct `variables` placed there}."""
    per_device: dict[str, int] = {}
    for variable in {id(variable): variable for variable in variables}.values():
        device = devices_lib.short_name(variable.device)
        size = variable.shape.num_elements() * variable.dtype.size
        per_device[device] = per_device.get(device, 0) + size
    return dict(sorted(per_device.items()))


def variable_bytes(variables: Sequence[tf.Variable]) -> int:
    """Bytes held by `variables`, each distinct variable counted once."""
    distinct = {id(variable): variable for variable in variables}.values()
    return sum(variable.shape.num_elements() * variable.dtype.size for variable in distinct)
