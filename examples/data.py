"""Data and model of the example trainers: scikit-learn's digits or synthetic images, an MLP.

Every epoch sees its own order, fixed by (seed, epoch) alone, so a run resumed at epoch k sees
exactly the batches an uninterrupted run sees, and every worker of a multi-worker run sees the
same global batches.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

NUM_CLASSES = 10
DIGITS_TRAIN_SIZE = 1437  # load_digits' 1797 images minus the 360 held out.
SYNTHETIC_DEFAULT_SIZE = 2048
_HELD_OUT_FRACTION = 0.2
_SPLIT_SEED = 0  # The held-out split never changes with --seed, so accuracies compare.


@dataclasses.dataclass(frozen=True)
class Data:
    """Training and held-out arrays; images are float32 in [0, 1], labels int32."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load(name: str, num_samples: int | None = None, image_size: int = 32, seed: int = 0) -> Data:
    """Loads `name` ("digits" or "synthetic"), with no download.

    Args:
      name: "digits" (scikit-learn's 8x8 handwritten digits, 1437 for training, 360 held out)
        or "synthetic" (learnable random RGB images, for throughput runs).
      num_samples: training samples to keep (digits) or generate (synthetic).
      image_size: side of the synthetic images.
      seed: seed of the synthetic images.

    Returns:
      A `Data`.

    Raises:
      ValueError: for an unknown name.
    """
    if name == "digits":
        data = _digits()
    elif name == "synthetic":
        data = _synthetic(num_samples or SYNTHETIC_DEFAULT_SIZE, image_size, seed)
    else:
        raise ValueError(f"Unknown dataset {name!r}; expected 'digits' or 'synthetic'.")
    if num_samples is not None:
        data = dataclasses.replace(
            data,
            train_images=data.train_images[:num_samples],
            train_labels=data.train_labels[:num_samples],
        )
    return data


_DESCRIPTIONS = {
    "digits": "scikit-learn's handwritten digits",
    "synthetic": "noisy copies of one random prototype image per class",
}


def describe(name: str, data: Data) -> str:
    """One line saying what a trainer trains on, e.g. for its first line of output."""
    shape = "x".join(str(side) for side in data.train_images.shape[1:])
    return (
        f"Data: {name} ({_DESCRIPTIONS[name]}), {len(data.train_labels)} training and "
        f"{len(data.test_labels)} held-out images of {shape}, {NUM_CLASSES} classes."
    )


def _digits() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images,
        labels,
        test_size=_HELD_OUT_FRACTION,
        random_state=_SPLIT_SEED,
        stratify=labels,
    )
    return Data(train_images, train_labels, test_images, test_labels)


def _synthetic(num_samples: int, image_size: int, seed: int) -> Data:
    """One noisy copy of a random prototype image per class: learnable, any size."""
    generator = np.random.default_rng(seed)
    shape = (image_size, image_size, 3)
    prototypes = generator.uniform(size=(NUM_CLASSES, *shape)).astype(np.float32)
    test_size = max(1, int(num_samples * _HELD_OUT_FRACTION))
    labels = generator.integers(NUM_CLASSES, size=num_samples + test_size).astype(np.int32)
    noise = generator.normal(scale=0.5, size=(len(labels), *shape)).astype(np.float32)
    images = np.clip(prototypes[labels] + noise, 0.0, 1.0)
    return Data(
        images[:num_samples], labels[:num_samples], images[num_samples:], labels[num_samples:]
    )


def build_model(input_shape: tuple[int, ...], hidden_units: int, seed: int):
    """A small MLP classifier returning logits; call it inside `strategy.scope()`."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(
                hidden_units,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            ),
            keras.layers.Dense(
                NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)
            ),
        ]
    )


def epoch_order(num_rows: int, seed: int, epoch) -> tf.Tensor:
    """The shuffled row order of `epoch`: a function of (seed, epoch) only."""
    seeds = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.argsort(tf.random.stateless_uniform([num_rows], seed=seeds))


def training_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epochs: range
) -> tf.data.Dataset:
    """Global batches of `epochs`, each epoch in its own order, ending with its partial batch.

    Args:
      images, labels: the training arrays.
      batch_size: the global batch size.
      seed: fixes every epoch's order.
      epochs: which epochs (0-based) to produce, e.g. range(resumed_epoch, total_epochs).

    Returns:
      A `tf.data.Dataset` of (images, labels) batches, epoch after epoch.
    """
    images = tf.constant(images)
    labels = tf.constant(labels)
    num_rows = len(labels)

    def one_epoch(epoch):
        order = tf.data.Dataset.from_tensor_slices(epoch_order(num_rows, seed, epoch))
        return order.batch(batch_size)

    batches = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
    batches = batches.map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows)))
    return _shard_by_data(batches.prefetch(2))


def held_out_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Held-out (images, labels) batches in their stored order."""
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return _shard_by_data(batches)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Multi-worker: each worker takes its slice of every global batch (the batches come from
    # tensors, not files, so FILE sharding would not apply).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
    return -(-num_rows // batch_size)
