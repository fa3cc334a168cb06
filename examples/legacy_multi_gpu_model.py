"""The legacy `multi_gpu_model` example, unchanged in spirit, small enough for a CPU.

As Keras' old documentation did: build a template model on the CPU, replicate it with
`multi_gpu_model`, train the parallel model on dummy data, save through the template (which
shares the trained weights). With no GPU, the replicas run on logical CPUs.

Run from the repository root (writes ./runs/legacy_multi_gpu_model/my_model.keras):

    python examples/legacy_multi_gpu_model.py
    python examples/legacy_multi_gpu_model.py --devices=4 --image_size=32 --epochs=5
"""

from __future__ import annotations

import dataclasses
import os
import sys

if __package__ in (None, ""):  # Run as a script: make `examples` and the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402

from examples import common  # noqa: E402
from replica_strategy import multi_gpu_model  # noqa: E402

DEFAULT_MODEL_DIR = os.path.join("runs", "legacy_multi_gpu_model")
NUM_CLASSES = 10


@dataclasses.dataclass
class LegacyResult:
    """What `train` returns: the parallel model's history, the saved file, template weights."""

    history: dict
    model_path: str
    weights: list


def train(
    *,
    devices: list[str] | int | None = None,
    num_samples: int = 1000,
    image_size: int = 16,
    hidden_units: int = 64,
    batch_size: int = 256,
    epochs: int = 2,
    learning_rate: float = 0.001,
    model_dir: str = DEFAULT_MODEL_DIR,
    seed: int = 0,
    verbose: str | int = "auto",
) -> LegacyResult:
    """Trains a template model through `multi_gpu_model` and saves it through the template.

    Args:
      devices: the legacy `gpus` argument: a count, GPU ids or device names (e.g.
        ["/cpu:0", "/cpu:1"]); None: every GPU, else the first two logical CPUs.
      num_samples, image_size: the dummy data (random RGB images, random one-hot labels).
      hidden_units: width of the template's hidden layer.
      batch_size: the global batch size, split across the replicas.
      epochs, learning_rate, seed: as usual.
      model_dir: where `my_model.keras` goes.

    Returns:
      A `LegacyResult`.
    """
    keras.utils.set_random_seed(seed)
    # Instantiate the base model (or "template" model) on the CPU, so that its weights are
    # hosted in CPU memory and shared by every replica.
    with tf.device("/cpu:0"):
        model = keras.Sequential(
            [
                keras.Input((image_size, image_size, 3)),
                keras.layers.Conv2D(8, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(hidden_units, activation="relu"),
                keras.layers.Dense(NUM_CLASSES, activation="softmax"),
            ]
        )
    # Replicates the model on the devices (GPUs, or logical CPUs on a machine without any).
    parallel_model = multi_gpu_model(model, gpus=devices or common.default_devices())
    parallel_model.compile(
        loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate)
    )
    # Generate dummy data.
    generator = np.random.default_rng(seed)
    x = generator.random((num_samples, image_size, image_size, 3), dtype=np.float32)
    y = keras.utils.to_categorical(generator.integers(NUM_CLASSES, size=num_samples), NUM_CLASSES)
    # This `fit` call is distributed: each device processes its share of each batch.
    history = parallel_model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
    # Save the model via the template model (which shares the same weights).
    os.makedirs(model_dir, exist_ok=True)
    model_path = os.path.join(model_dir, "my_model.keras")
    model.save(model_path)
    print(f"Saved the template model to {os.path.abspath(model_path)}", flush=True)
    return LegacyResult(history.history, model_path, model.get_weights())


def main(argv):
    del argv  # Unused.
    arguments = common.arguments_from_flags(DEFAULT_MODEL_DIR)
    if arguments.strategy != "replica":
        raise app.UsageError(
            "--strategy: legacy_multi_gpu_model always replicates with multi_gpu_model "
            f"(ReplicaStrategy); leave --strategy unset. Received: --strategy={arguments.strategy}"
        )
    devices = common.configure_devices(arguments.devices)
    train(
        devices=devices,
        num_samples=arguments.num_samples or 1000,
        image_size=arguments.image_size,
        hidden_units=arguments.hidden_units,
        batch_size=arguments.batch_size,
        epochs=arguments.epochs,
        learning_rate=arguments.learning_rate,
        model_dir=arguments.model_dir,
        seed=arguments.seed,
    )


if __name__ == "__main__":
    app.run(main)
