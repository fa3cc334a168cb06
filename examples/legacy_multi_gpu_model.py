"""The legacy `multi_gpu_model` example, unchanged in spirit, small enough for a CPU.

As Keras' old documentation did: build a template model on the CPU, replicate it with
`multi_gpu_model`, train the parallel model, save through the template (which shares the
trained weights). Keras' documentation trained on random data, whose loss never falls; this
trains on `--dataset` (scikit-learn's digits by default), so the loss falls and the held-out
accuracy it prints means something. With no GPU, the replicas run on logical CPUs.

Run from the repository root (writes ./runs/legacy_multi_gpu_model/my_model.keras):

    python examples/legacy_multi_gpu_model.py
    python examples/legacy_multi_gpu_model.py --devices=4 --epochs=5
    python examples/legacy_multi_gpu_model.py --dataset=synthetic --image_size=32

It does not checkpoint or resume (the legacy API had no such thing); see docs/trainers.md.
"""

from __future__ import annotations

import dataclasses
import os
import sys

if __package__ in (None, ""):  # Run as a script: make `examples` and the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
    # TensorFlow's C++ runtime logs from import on, before absl reads --verbosity: WARNING and
    # above unless TF_CPP_MIN_LOG_LEVEL says otherwise (0 shows its INFO lines).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from examples import data as data_lib  # noqa: E402
from examples import describe, local_devices, program, trainer_flags  # noqa: E402
from examples import model_dir as model_dir_lib  # noqa: E402
from replica_strategy import multi_gpu_model  # noqa: E402

flags.adopt_module_key_flags(trainer_flags)  # --help lists the shared flags as this trainer's own.

DEFAULT_MODEL_DIR = os.path.join("runs", "legacy_multi_gpu_model")


@dataclasses.dataclass
class LegacyResult:
    """What `train` returns.

    Attributes:
      history: the parallel model's `fit` history, e.g. {"loss": [...], "accuracy": [...]}.
      test_accuracy: the parallel model's accuracy on the held-out data.
      model_path: the template model saved after training (`my_model.keras`).
      weights: the template's weights, as numpy arrays.
    """

    history: dict
    test_accuracy: float
    model_path: str
    weights: list


def train(
    *,
    devices: list[str] | int | None = None,
    dataset: str = "digits",
    num_samples: int | None = None,
    image_size: int = 32,
    hidden_units: int = 64,
    batch_size: int = 64,
    epochs: int = 20,
    learning_rate: float = 0.005,
    model_dir: str = DEFAULT_MODEL_DIR,
    seed: int = 0,
    verbose: str | int = "auto",
) -> LegacyResult:
    """Trains a template model through `multi_gpu_model` and saves it through the template.

    Args:
      devices: the legacy `gpus` argument: a count, GPU ids or device names (e.g.
        ["/cpu:0", "/cpu:1"]); None: every GPU, else the first two logical CPUs.
      dataset, num_samples, image_size: the data, as for the other trainers (`data.load`).
      hidden_units: width of the template's hidden layer.
      batch_size: the global batch size, split across the replicas.
      epochs, learning_rate, seed: as usual (RMSprop, as the legacy example used).
      model_dir: where `my_model.keras` goes; checked, created and locked before the model
        is built (`model_dir.ModelDirError` if it cannot be used).

    Returns:
      A `LegacyResult`.
    """
    with model_dir_lib.exclusive(model_dir):
        keras.utils.set_random_seed(seed)
        data = data_lib.load(dataset, num_samples, image_size, seed)
        print(data_lib.describe(dataset, data), flush=True)
        # Instantiate the base model (or "template" model) on the CPU, so that its weights are
        # hosted in CPU memory and shared by every replica.
        with tf.device("/cpu:0"):
            model = keras.Sequential(
                [
                    keras.Input(data.train_images.shape[1:]),
                    keras.layers.Conv2D(8, 3, activation="relu"),
                    keras.layers.Flatten(),
                    keras.layers.Dense(hidden_units, activation="relu"),
                    keras.layers.Dense(data_lib.NUM_CLASSES, activation="softmax"),
                ]
            )
        # Replicates the model on the devices (GPUs, or logical CPUs on a machine without any).
        parallel_model = multi_gpu_model(model, gpus=devices or local_devices.default_devices())
        print(describe.describe_strategy(parallel_model.distribute_strategy), flush=True)
        parallel_model.compile(
            loss="categorical_crossentropy",
            optimizer=keras.optimizers.RMSprop(learning_rate),
            metrics=["accuracy"],
        )
        # This `fit` call is distributed: each device processes its share of each batch.
        history = parallel_model.fit(
            data.train_images,
            _one_hot(data.train_labels),
            epochs=epochs,
            batch_size=batch_size,
            verbose=verbose,
        )
        accuracy = parallel_model.evaluate(
            data.test_images, _one_hot(data.test_labels), return_dict=True, verbose=0
        )["accuracy"]
        print(f"Held-out accuracy: {accuracy:.4f}", flush=True)
        # Save the model via the template model (which shares the same weights).
        model_path = os.path.join(model_dir, "my_model.keras")
        model.save(model_path)
        print(f"Saved the template model to {os.path.abspath(model_path)}", flush=True)
    return LegacyResult(history.history, float(accuracy), model_path, model.get_weights())


def _one_hot(labels):
    return keras.utils.to_categorical(labels, data_lib.NUM_CLASSES)


def main(argv):
    del argv  # Unused.
    program.configure_logging()
    arguments = trainer_flags.train_arguments(DEFAULT_MODEL_DIR)
    # The other trainers' options, which the legacy call does not have.
    strategy = arguments.pop("strategy")
    if strategy != "replica":
        raise app.UsageError(
            "--strategy: legacy_multi_gpu_model always replicates with multi_gpu_model "
            f"(ReplicaStrategy); leave --strategy unset. Received: --strategy={strategy}"
        )
    if arguments.pop("mirror_weights"):
        raise app.UsageError(
            "--mirror_weights: multi_gpu_model keeps the legacy placement, every weight once on "
            "the CPU. Train with examples/train_keras.py --mirror_weights instead."
        )
    optimizer = arguments.pop("optimizer")
    if optimizer != "adam":
        raise app.UsageError(
            "--optimizer: legacy_multi_gpu_model trains with RMSprop, as multi_gpu_model's "
            "documented example does. Train with examples/train_keras.py --optimizer=... instead. "
            f"Received: --optimizer={optimizer}"
        )
    split = arguments.pop("split")
    if split != "even":
        raise app.UsageError(
            "--split: multi_gpu_model splits every batch evenly, as the legacy API did. Train "
            "with examples/train_keras.py --split=... instead. Received: "
            f"--split={trainer_flags.format_split(split)}"
        )
    arguments["devices"] = local_devices.configure_devices(arguments["devices"])
    train(**arguments)


if __name__ == "__main__":
    program.run(main)
