"""Throughput when one replica device is slower than the other, by how each batch is split.

THIS IS A SIMULATION. There is one CPU here, split into logical devices; to give them different
speeds, a layer of the model (`SimulatedDeviceTime`) sleeps `seconds_per_row[i] * rows` on replica
i in every forward pass, through `tf.numpy_function(time.sleep)`. A sleep costs no CPU, so on shared
cores it slows that replica alone, fairly, as a slower GPU would; the model's own arithmetic is
kept small so that the sleeps dominate. By default replica 0 takes 0.25 ms per row and replica 1
three times as long: a pair like an A100 beside a V100 (benchmarks/SCALING.md, "Mixed pair").

Contestants, in one run, interleaved so machine noise hits all alike (Keras 3 `fit`, the same
model, global batch and data; replicas on /cpu:1 and /cpu:2, ReplicaStrategy's host /cpu:0):
- ReplicaStrategy(split="even"): half of each batch on each device, as every synchronous
  data-parallel strategy splits it;
- ReplicaStrategy(split=<the true speeds>): rows in proportion to 1 / seconds_per_row ("3,1");
- ReplicaStrategy(split="auto"): starts even, measures each replica's busy time inside the
  step and moves rows until the replicas are busy equally long;
- MirroredStrategy: TensorFlow's own, an even split.
What to expect: an even split waits for the slow device, so it runs at 2 rows per slow row-time;
a split by speed runs at the sum of both devices' rates (here 2x the even split's, the
"simulation's bound" in the table). Each figure is median [min-max] over the timed windows; the
table also shows where `auto` ended, how many steps it took to settle and whether any step was
traced again after the first (the split is a variable: changing it must not retrace).

    python -m benchmarks.mixed_speeds                 # the table, and the plot with --plot_out
    python -m benchmarks.mixed_speeds --repetitions=3 --steps_per_window=10 --warmup_steps=30

benchmarks/benchmark.py runs it (in its own process) and puts the table in results.md and the
plot in mixed_speeds.png.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import random
import statistics
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import contestants
from benchmarks.placements import Strategy
from replica_strategy import logical_devices

# The contestants: ReplicaStrategy's under the splits it is run with, and MirroredStrategy,
# named as every benchmark table names them (benchmarks/placements.py).
EVEN = f"{Strategy.REPLICA} split=even"
STATIC = f"{Strategy.REPLICA} split=true speeds"
AUTO = f"{Strategy.REPLICA} split=auto"
MIRRORED = Strategy.MIRRORED
NAMES = (EVEN, STATIC, AUTO, MIRRORED)
HOST = "/cpu:0"  # ReplicaStrategy's parameter device, as every benchmark's (contestants.py).
REPLICAS = ("/cpu:1", "/cpu:2")
_FEATURES = 32
_CLASSES = 10
# `auto` has settled at the first step from which its fractions stay this close to where the
# run ends ...
SETTLED_TOLERANCE = 0.02
# ... and has found the true speeds at the first step from which they stay this close to them.
TRUE_SPEEDS_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run.

    Attributes:
        seconds_per_row: Simulated compute time per row of each replica device, in seconds.
        global_batch: Rows per step.
        repetitions: Timed windows per contestant, interleaved.
        steps_per_window: Steps in each timed window.
        warmup_steps: Untimed steps per contestant first (tracing; `auto` settles here).
        width: Units of the model's hidden Dense layer.
        seed: Seeds the order of contestants in each repetition.
    """

    seconds_per_row: tuple[float, ...] = (0.25e-3, 0.75e-3)
    global_batch: int = 64
    repetitions: int = 5
    steps_per_window: int = 20
    warmup_steps: int = 40
    width: int = 64
    seed: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the setting that cannot run."""
        if len(self.seconds_per_row) != len(REPLICAS):
            raise ValueError(
                f"seconds_per_row needs one time per replica device {REPLICAS}; received "
                f"{self.seconds_per_row}."
            )
        if not all(seconds > 0 for seconds in self.seconds_per_row):
            raise ValueError(
                f"seconds_per_row must be positive (the true speeds define the static split); "
                f"received {self.seconds_per_row}."
            )
        for name in ("global_batch", "repetitions", "steps_per_window", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; received {getattr(self, name)}.")

    @property
    def true_split(self) -> tuple[float, ...]:
        """The fractions in proportion to each device's speed, 1 / seconds_per_row."""
        rates = [1 / seconds for seconds in self.seconds_per_row]
        return tuple(rate / sum(rates) for rate in rates)

    @property
    def even_bound(self) -> float:
        """Rows/s of an even split if the sleeps were all the time: the slow device sets it."""
        share = self.global_batch / len(self.seconds_per_row)
        return self.global_batch / (share * max(self.seconds_per_row))

    @property
    def speed_bound(self) -> float:
        """Rows/s of a split by speed, the same way: the sum of the devices' rates."""
        return sum(1 / seconds for seconds in self.seconds_per_row)


def _simulated_device_time_layer():
    """`SimulatedDeviceTime`, the Keras layer class that simulates slower devices."""

    class SimulatedDeviceTime(keras.layers.Layer):
        """Identity that first sleeps `seconds_per_row[replica] * rows` (the simulation).

        The replica is the replica context's `replica_id_in_sync_group` (0 without a
        strategy). The sleep is a `tf.numpy_function`, so it runs inside the executed step,
        where `split="auto"` measures, and the output waits for it. `traces` counts the graphs the
        layer was traced into (once per replica per traced step).
        """

        def __init__(self, seconds_per_row: Sequence[float], **kwargs):
            super().__init__(**kwargs)
            self.seconds_per_row = tuple(float(seconds) for seconds in seconds_per_row)
            self.traces = 0

        def call(self, inputs):
            if not tf.executing_eagerly():
                self.traces += 1
            context = tf.distribute.get_replica_context()
            replica = 0 if context is None else context.replica_id_in_sync_group
            seconds = tf.gather(tf.constant(self.seconds_per_row, tf.float64), replica)
            rows = tf.cast(tf.shape(inputs)[0], tf.float64)
            # Not stateful, so that TensorFlow's automatic control dependencies do not chain the
            # replicas' sleeps one after the other (devices run side by side). The inputs pass
            # through it, so nothing downstream can run (or be pruned) without the sleep.
            outputs = tf.numpy_function(
                _sleep_then_return, [inputs, seconds * rows], Tout=inputs.dtype, stateful=False
            )
            outputs.set_shape(inputs.shape)
            return outputs

        def compute_output_shape(self, input_shape):
            return input_shape

    return SimulatedDeviceTime


def _sleep_then_return(inputs: np.ndarray, seconds) -> np.ndarray:
    time.sleep(float(seconds))
    return inputs


def make_strategy(name: str, settings: Settings) -> tf.distribute.Strategy:
    """The contestant's strategy on `REPLICAS`, made by the benchmarks' one factory.

    ReplicaStrategy's parameter device is `HOST`; every MirroredStrategy gets collective keys
    of its own (`replica_strategy.strategies.make_strategy`).
    """
    if name == MIRRORED:
        return contestants.make_strategy(
            contestants.Contestant(Strategy.MIRRORED, len(REPLICAS)), REPLICAS
        )
    split = {EVEN: "even", STATIC: settings.true_split, AUTO: "auto"}[name]
    return contestants.make_strategy(
        contestants.Contestant(Strategy.REPLICA, len(REPLICAS)),
        REPLICAS,
        parameter_device=HOST,
        split=split,
    )


class Workload:
    """The model under one contestant, trained window by window with `fit`."""

    def __init__(self, name: str, settings: Settings):

        self.name = name
        self.settings = settings
        self.strategy = make_strategy(name, settings)
        initial = getattr(self.strategy, "split", None)  # MirroredStrategy has none
        self.initial_split = None if initial is None else [float(value) for value in initial]
        with self.strategy.scope():
            self.delay = _simulated_device_time_layer()(settings.seconds_per_row)
            self.model = keras.Sequential(
                [
                    keras.Input((_FEATURES,)),
                    self.delay,
                    keras.layers.Dense(settings.width, activation="relu"),
                    keras.layers.Dense(_CLASSES),
                ]
            )
            self.model.compile(
                optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        generator = tf.random.Generator.from_seed(0)
        features = generator.normal((settings.global_batch, _FEATURES))
        labels = generator.uniform((settings.global_batch,), maxval=_CLASSES, dtype=tf.int32)
        self._data = tf.data.Dataset.from_tensors((features, labels)).repeat()
        self.fractions: list[tuple[float, ...]] = []  # `auto`'s, after each step it ran
        self.traces_after_first_step: int | None = None

    def run(self, steps: int) -> float:
        """Trains `steps` + 1 steps; returns the time of the last `steps` (from the end of the
        first batch to the end of the last: no per-call set-up of `fit` inside)."""

        stamps = []
        reads_split = self.name == AUTO  # the others' split does not change

        def on_batch_end(batch, logs=None):
            stamps.append(time.perf_counter())
            if reads_split:
                self.fractions.append(tuple(float(value) for value in self.strategy.split))

        timer = keras.callbacks.LambdaCallback(on_train_batch_end=on_batch_end)
        self.model.fit(
            self._data,
            epochs=1,
            steps_per_epoch=steps + 1,
            verbose=0,
            callbacks=[timer],
            shuffle=False,
        )
        if self.traces_after_first_step is None:
            self.traces_after_first_step = self.delay.traces
        return stamps[-1] - stamps[0]

    @property
    def retraces(self) -> int:
        """Traces of the layer since the first step (0: no step was traced again)."""
        return self.delay.traces - (self.traces_after_first_step or 0)


def settled_step(
    fractions: Sequence[Sequence[float]],
    target: Sequence[float] | None = None,
    tolerance: float = SETTLED_TOLERANCE,
) -> int | None:
    """The 1-based step from which every split stays within `tolerance` of `target` (by
    default the last split).

    Returns:
        That step; None for no steps, or when even the last split is farther from `target`.
    """
    if not fractions:
        return None
    target = fractions[-1] if target is None else target
    step = None
    for index in range(len(fractions) - 1, -1, -1):
        if _distance(fractions[index], target) > tolerance:
            break
        step = index + 1
    return step


def _distance(split: Sequence[float], target: Sequence[float]) -> float:
    return max(abs(a - b) for a, b in zip(split, target, strict=True))


def first_step_near(
    fractions: Sequence[Sequence[float]], target: Sequence[float], tolerance: float
) -> int | None:
    """The first 1-based step whose split is within `tolerance` of `target`, or None."""
    for index, split in enumerate(fractions):
        if _distance(split, target) <= tolerance:
            return index + 1
    return None


def share_near(
    fractions: Sequence[Sequence[float]], target: Sequence[float], tolerance: float
) -> float | None:
    """The share of `fractions` within `tolerance` of `target` (None for no steps)."""
    if not fractions:
        return None
    return sum(_distance(split, target) <= tolerance for split in fractions) / len(fractions)


def _failure(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    reason = f"{type(error).__name__}: {lines[0]}"
    return "failed: " + (reason if len(reason) <= 100 else reason[:97] + "...")


def measure(settings: Settings) -> dict:
    """Runs every contestant, interleaved; needs logical CPUs /cpu:0 ... /cpu:2.

    Returns:
        {"date", "tensorflow", "settings", "rows": [one per contestant: "name", "seconds" (per
        window), "failed", "initial_split", "fractions" (`auto`'s after each step),
        "final_split" (the splits None for MirroredStrategy), "retraces"]}, JSON-serializable.
    """

    settings.validate()
    rows = {name: {"name": name, "seconds": [], "failed": None} for name in NAMES}
    workloads = {}
    for name in NAMES:
        try:
            workload = Workload(name, settings)
            workload.run(settings.warmup_steps)
            workloads[name] = workload
        except Exception as error:  # noqa: BLE001  (a failing contestant fills its row)
            rows[name]["failed"] = _failure(error)
    order = random.Random(settings.seed)
    names = list(workloads)
    for _ in range(settings.repetitions):
        order.shuffle(names)
        for name in names:
            if rows[name]["failed"] is None:
                try:
                    rows[name]["seconds"].append(workloads[name].run(settings.steps_per_window))
                except Exception as error:  # noqa: BLE001
                    rows[name]["failed"] = _failure(error)
    for name, workload in workloads.items():
        rows[name]["initial_split"] = workload.initial_split
        rows[name]["fractions"] = [list(fractions) for fractions in workload.fractions]
        final = getattr(workload.strategy, "split", None)  # MirroredStrategy has none
        rows[name]["final_split"] = None if final is None else [float(value) for value in final]
        rows[name]["retraces"] = workload.retraces
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "tensorflow": tf.__version__,
        "settings": dataclasses.asdict(settings),
        "rows": [rows[name] for name in NAMES],
    }


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}–{max(values):,.0f}]"


def summary(results: dict) -> list[dict]:
    """Per contestant: rows/s per window, the paired ratio to the even split, where the split
    ended and when it settled."""
    settings = results["settings"]
    rows_per_window = settings["global_batch"] * settings["steps_per_window"]
    true_split = Settings(seconds_per_row=tuple(settings["seconds_per_row"])).true_split
    even = next(row for row in results["rows"] if row["name"] == EVEN)
    summaries = []
    for row in results["rows"]:
        entry = {"name": row["name"], "failed": row["failed"]}
        if not row["failed"] and row["seconds"]:
            entry["rows_per_second"] = [rows_per_window / seconds for seconds in row["seconds"]]
            if not even["failed"] and even["seconds"]:
                entry["over_even"] = [
                    theirs / mine
                    for mine, theirs in zip(row["seconds"], even["seconds"], strict=False)
                ]
        entry["final_split"] = row.get("final_split")
        fractions = row.get("fractions") or []
        timed = fractions[settings["warmup_steps"] + 1 :]
        entry["median_split"] = (
            [statistics.median(split[device] for split in timed) for device in range(len(timed[0]))]
            if timed
            else entry["final_split"]
        )
        entry["settled_step"] = settled_step(fractions)
        entry["reached_true_speeds_step"] = first_step_near(
            fractions, true_split, TRUE_SPEEDS_TOLERANCE
        )
        entry["near_true_speeds_share"] = share_near(
            fractions[(entry["reached_true_speeds_step"] or 1) - 1 :],
            true_split,
            TRUE_SPEEDS_TOLERANCE,
        )
        entry["retraces"] = row.get("retraces")
        summaries.append(entry)
    return summaries


def _split_text(median, final) -> str:
    if final is None:
        return "even"
    text = " / ".join(f"{value:.3f}" for value in median)
    if any(abs(a - b) > 5e-4 for a, b in zip(median, final, strict=True)):
        text += " (" + " / ".join(f"{value:.3f}" for value in final) + ")"
    return text


def _step_text(step: int | None) -> str:
    return "–" if step is None else str(step)


def markdown(results: dict) -> str:
    """The table: rows/s, ratio to the even split, the split in force at the end."""
    settings = results["settings"]
    per_row_ms = " and ".join(f"{1e3 * seconds:g} ms" for seconds in settings["seconds_per_row"])
    true_split = Settings(seconds_per_row=tuple(settings["seconds_per_row"])).true_split
    bounds = Settings(
        seconds_per_row=tuple(settings["seconds_per_row"]), global_batch=settings["global_batch"]
    )
    lines = [
        "| Contestant | rows/s | / split=even, paired | split: median over the timed steps "
        f"(at the end) | first within {TRUE_SPEEDS_TOLERANCE} of the true speeds at step | "
        "steps within it from then on | retraces after step 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in summary(results):
        if entry["failed"]:
            lines.append(f"| {entry['name']} | {entry['failed']} | | | | | |")
            continue
        share = entry["near_true_speeds_share"]
        cells = [
            _spread(entry["rows_per_second"]) if "rows_per_second" in entry else "–",
            f"{statistics.median(entry['over_even']):.2f}" if entry.get("over_even") else "–",
            _split_text(entry["median_split"], entry["final_split"]),
            _step_text(entry["reached_true_speeds_step"]),
            "–" if share is None else f"{100 * share:.0f}%",
            str(entry["retraces"]) if entry["retraces"] is not None else "–",
        ]
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"SIMULATION on logical CPUs: replica devices {', '.join(REPLICAS)} sleep {per_row_ms} "
        "per row in each forward pass (`tf.numpy_function(time.sleep)`, no CPU used, the replicas' sleeps side by side), standing "
        "for devices of those speeds; the model's own arithmetic is small beside it. "
        f"True speeds: split {' / '.join(f'{value:.3f}' for value in true_split)}. The "
        f"simulation's bounds (sleeps only): {bounds.even_bound:,.0f} rows/s for an even split, "
        f"{bounds.speed_bound:,.0f} rows/s for a split by speed. Keras 3 `fit`, global batch "
        f"{settings['global_batch']}, {settings['repetitions']} interleaved windows of "
        f"{settings['steps_per_window']} steps per contestant after {settings['warmup_steps']} "
        f"warm-up steps ({results['date']}, TensorFlow {results['tensorflow']}). Steps count "
        "every `fit` step `auto` ran, warm-up included.",
    ]
    return "\n".join(lines)


def write_plot(results: dict, path: pathlib.Path) -> bool:
    """Rows/s per contestant beside the simulation's bounds, and `auto`'s split step by step.

    Returns:
        False when matplotlib is not installed (nothing written).
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        return False
    settings = results["settings"]
    bounds = Settings(
        seconds_per_row=tuple(settings["seconds_per_row"]), global_batch=settings["global_batch"]
    )
    entries = summary(results)
    figure, (bars, steps) = pyplot.subplots(1, 2, figsize=(13, 4.8))
    for index, entry in enumerate(entries):
        values = entry.get("rows_per_second")
        if not values:
            continue
        median = statistics.median(values)
        bars.bar(index, median, color=f"C{index}")
        bars.errorbar(
            index, median, yerr=[[median - min(values)], [max(values) - median]], color="black"
        )
    bars.axhline(bounds.even_bound, color="grey", linestyle="--", label="bound, even split")
    bars.axhline(bounds.speed_bound, color="black", linestyle=":", label="bound, split by speed")
    bars.set_xticks(range(len(entries)), [entry["name"].replace(" split=", "\nsplit=") for entry in entries], fontsize="small")  # fmt: skip
    bars.set(ylabel="rows/s", title="fit throughput, one device 3x slower (SIMULATION)")
    bars.set_ylim(bottom=0)
    bars.legend(fontsize="small", loc="lower right")
    auto = next(row for row in results["rows"] if row["name"] == AUTO)
    fractions = auto.get("fractions") or []
    if fractions:
        for device in range(len(fractions[0])):
            steps.plot(
                range(1, len(fractions) + 1),
                [split[device] for split in fractions],
                label=f"split=auto, {REPLICAS[device]}",
            )
        for device, fraction in enumerate(bounds.true_split):
            steps.axhline(fraction, color=f"C{device}", linestyle=":", linewidth=1)
    steps.set(xlabel="training step", ylabel="fraction of each batch", ylim=(0, 1))
    steps.set_title("split=auto after each step (dotted: the true speeds)")
    steps.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return True


def define_flags() -> None:
    """The command line's flags; defined only when run as a script, so importing this module
    next to another benchmark script defines no clashing flags."""
    defaults = Settings()
    flags.DEFINE_list(
        "seconds_per_row",
        [str(seconds) for seconds in defaults.seconds_per_row],
        "Simulated seconds per row of /cpu:1 and /cpu:2.",
    )
    flags.DEFINE_integer("global_batch", defaults.global_batch, "Rows per step.")
    flags.DEFINE_integer("repetitions", defaults.repetitions, "Timed windows per contestant.")
    flags.DEFINE_integer("steps_per_window", defaults.steps_per_window, "Steps per window.")
    flags.DEFINE_integer("warmup_steps", defaults.warmup_steps, "Untimed steps first.")
    flags.DEFINE_string("plot_out", None, "Also write the plot (PNG) here; needs matplotlib.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
    values = flags.FLAGS
    try:
        settings = Settings(
            seconds_per_row=tuple(float(value) for value in values.seconds_per_row),
            global_batch=values.global_batch,
            repetitions=values.repetitions,
            steps_per_window=values.steps_per_window,
            warmup_steps=values.warmup_steps,
        )
        settings.validate()
    except ValueError as error:
        raise app.UsageError(str(error)) from None

    logical_devices.split_cpu(len(REPLICAS) + 1)
    results = measure(settings)
    print(markdown(results))
    if values.plot_out and write_plot(results, pathlib.Path(values.plot_out)):
        print(f"Wrote {values.plot_out}")
    print(json.dumps(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
