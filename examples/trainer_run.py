"""What both trainers do around their training: the command line, the run's setup, its record.

A trainer's `train(...)` opens a run, which makes the strategy, locks `--model_dir`, loads the
data and prints the first lines; it builds and trains its model, timing the epochs it trains,
and ends with `run.finish(...)`, which writes `model.keras` and `summary.json`:

    with trainer_run.start("train_keras", strategy=..., devices=..., ...) as run:
        with run.distribution.scope():
            model = ...
        with run.timed_training():
            model.fit(...)
        return run.finish(model, accuracy, history, initial_epoch, epochs)

Its `main` is `trainer_run.main(train, DEFAULT_MODEL_DIR)`: the flags as `train`'s arguments,
the devices configured before TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from examples import checkpoints as checkpoints_lib
from examples import data as data_lib
from examples import describe, local_devices, outputs, program, trainer_flags
from examples import model_dir as model_dir_lib
from replica_strategy import strategies


def main(train: Callable[..., outputs.TrainResult], default_model_dir: str) -> None:
    """A trainer's `main`: calls `train` with the flags, errors that say what to do as messages.

    The devices are configured first, before anything initializes TensorFlow (a count may split
    the CPU); `--strategy=one_device` without `--devices` asks for one device.
    """
    program.configure_logging()
    arguments = trainer_flags.train_arguments(default_model_dir)
    if arguments["strategy"] in local_devices.LOCAL_STRATEGIES:
        if arguments["strategy"] == "one_device" and arguments["devices"] is None:
            arguments["devices"] = 1
        arguments["devices"] = local_devices.configure_devices(
            arguments["devices"], arguments["split"]
        )
    else:
        arguments["devices"] = None  # multi_worker and default choose their own devices.
    if arguments["split"] != "auto":
        # Not with split="auto": it times each replica with tf.timestamp, which op determinism
        # refuses, and a split that follows measured times does not repeat run to run anyway.
        tf.config.experimental.enable_op_determinism()
    with program.exit_with_message(
        checkpoints_lib.CorruptCheckpointError, checkpoints_lib.ModelMismatchError
    ):
        train(**arguments)


@dataclasses.dataclass
class Run:
    """A run under way: its strategy, where it writes, its data, and what `summary.json` says.

    Attributes:
      distribution: the strategy to build and train the model in.
      output_dir: where this process writes (`outputs.output_dir`).
      data: the training and held-out data.
      record: the fields of `summary.json` known at the start (`outputs.run_record`).
      requested_split: `--split` under ReplicaStrategy; None under the others (they split
        evenly, nothing is asked of them).
      training_seconds: the wall time `timed_training` measured; None before.
    """

    distribution: tf.distribute.Strategy
    output_dir: str
    data: data_lib.Data
    record: dict
    requested_split: str | tuple[float, ...] | None
    training_seconds: float | None = None

    @contextlib.contextmanager
    def timed_training(self) -> Iterator[None]:
        """Times the epochs the run trains (validation and checkpoints included)."""
        start = time.perf_counter()
        yield
        self.training_seconds = time.perf_counter() - start

    def finish(
        self, model, accuracy: float, history: dict, initial_epoch: int, epochs: int
    ) -> outputs.TrainResult:
        """Saves `model.keras` and `summary.json` (`outputs.finish`); returns the result."""
        trained_rows = (epochs - initial_epoch) * len(self.data.train_labels)
        return outputs.finish(
            model,
            self.output_dir,
            {
                **self.record,
                "test_accuracy": accuracy,
                "epochs": epochs,
                "initial_epoch": initial_epoch,
                # At the end: with split="auto" the fractions move during the run.
                "split": outputs.split_summary(self.distribution, self.requested_split),
                **outputs.throughput(trained_rows, self.training_seconds),
            },
            history,
        )


@contextlib.contextmanager
def start(
    trainer: str,
    *,
    strategy: str,
    devices: list[str] | None,
    dataset: str,
    num_samples: int | None,
    image_size: int,
    batch_size: int,
    learning_rate: float,
    model_dir: str,
    seed: int,
    mirror_weights: bool,
    optimizer: str,
    split: str | tuple[float, ...],
) -> Iterator[Run]:
    """Makes the strategy, locks the output directory, loads the data, prints the first lines.

    Args: `trainer` names the trainer in `summary.json`; the others are its `train(...)`'s.

    Yields:
      The `Run`, with `model_dir` (or a worker's own directory) locked until the block ends.
    """
    if strategy in local_devices.LOCAL_STRATEGIES:
        devices = devices or local_devices.default_devices()
    # The first TensorFlow object made: MultiWorkerMirroredStrategy must exist before others.
    distribution = strategies.make_strategy(
        strategy, devices, **trainer_flags.replica_options(mirror_weights, split)
    )
    output_dir = outputs.output_dir(distribution, model_dir)
    with model_dir_lib.exclusive(output_dir):
        keras.utils.set_random_seed(seed)
        data = data_lib.load(dataset, num_samples, image_size, seed)
        print(data_lib.describe(dataset, data))
        print(describe.describe_strategy(distribution))
        if strategy == "replica":
            print(describe.describe_split(distribution, split))
        record = outputs.run_record(
            trainer,
            strategy,
            distribution,
            mirror_weights=mirror_weights,
            dataset=dataset,
            batch_size=batch_size,
            optimizer=optimizer,
            learning_rate=learning_rate,
            seed=seed,
        )
        yield Run(distribution, output_dir, data, record, split if strategy == "replica" else None)
