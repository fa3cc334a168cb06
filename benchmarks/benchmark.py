"""ReplicaStrategy side by side with TensorFlow's own strategies: throughput, memory, overhead.

In one run, with the contestants interleaved so machine noise hits all alike:
1. samples/s of `fit`, `predict` and a custom training loop on a small CNN and a wider MLP, for
   no strategy, OneDeviceStrategy, and ReplicaStrategy, MirroredStrategy and
   CentralStorageStrategy on 1, 2 and 4 logical CPUs, with the same global batch;
2. peak RSS and bytes in variables (Adam, slots included), in all and per device, of a
   ~50M-parameter MLP under ReplicaStrategy (each mode) and MirroredStrategy at 1, 2 and 4
   replicas, each in a fresh process;
3. the step-time overhead of ReplicaStrategy on one device against no strategy;
4. the bytes that cross between devices per training step, per (sender, receiver) pair, and the
   variables per device, with a separate host device (benchmarks/traffic.py);
5. what Keras 3's Adam and replica_strategy.FusedAdam cost on this host per million parameters
   (benchmarks/host_update.py), an input of the GPU model (benchmarks/gpu_model/);
6. a SIMULATION of devices of different speeds (benchmarks/mixed_speeds.py: one replica sleeps
   3x as long per row): `fit` throughput of ReplicaStrategy's split="even", the split by the
   true speeds and split="auto", and MirroredStrategy, and how `auto` settled.
Every figure is median [min–max] over repetitions. A contestant that cannot run gets
"failed: <reason>" in its cell. Writes results.json, results.md and results.png (the plots need
matplotlib: `pip install matplotlib`), mixed_speeds.png and the README's headline.png to --output_dir and prints
the Markdown. To measure another `replica_strategy` tree, put a directory holding only that
package first on PYTHONPATH.

Run from the repository root:

    python benchmarks/benchmark.py --quick   # CI smoke run, under 2 minutes
    python benchmarks/benchmark.py           # the full run, for people (~15 minutes)
    python benchmarks/benchmark.py --models=mlp --modes=fit --device_counts=1,2
"""

import os
import pathlib
import sys
from collections.abc import Sequence

from absl import app, flags

if not __package__:  # Run as a script: make `benchmarks` and `replica_strategy` importable.
    # Appended, so a `replica_strategy` on PYTHONPATH (another tree to measure) comes first.
    sys.path.append(str(pathlib.Path(__file__).resolve().parent.parent))

# Importing TensorFlow leaves its devices uninitialized; `main` configures them first thing.
import replica_strategy  # noqa: E402
from benchmarks import contestants, outputs, suite, traffic, workloads  # noqa: E402

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke run in under 2 minutes: small sizes, few repetitions."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmarks/results", "Where results go.")
_MODELS = flags.DEFINE_list("models", list(contestants.MODEL_NAMES), "Models to train.")
_MODES = flags.DEFINE_list("modes", list(workloads.MODES), "fit, predict, custom_loop.")
_DEVICE_COUNTS = flags.DEFINE_list("device_counts", ["1", "2", "4"], "Logical CPU counts.")
_CONTESTANTS = flags.DEFINE_list("contestants", list(contestants.NAMES), "Strategies to run.")
_GLOBAL_BATCH = flags.DEFINE_integer("global_batch", 256, "Rows per step, every device count.")
_REPETITIONS = flags.DEFINE_integer("repetitions", 10, "Timed windows per contestant.")
_STEPS_PER_WINDOW = flags.DEFINE_integer("steps_per_window", 20, "Steps per timed window.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 3, "Untimed steps before the first window.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the contestants' order in each repetition.")
_MEMORY_DEVICE_COUNTS = flags.DEFINE_list(
    "memory_device_counts", ["1", "2", "4"], "Replica counts of the memory probes; empty: none."
)
_MEMORY_WIDTH = flags.DEFINE_integer("memory_width", 4096, "Memory MLP layer width.")
_MEMORY_LAYERS = flags.DEFINE_integer(
    "memory_layers", 3, "Memory MLP layers (3 x 4096 x 4096: 50M parameters)."
)
_MEMORY_REPETITIONS = flags.DEFINE_integer(
    "memory_repetitions", 2, "Fresh processes per memory configuration."
)
_MEMORY_PROCESSES = flags.DEFINE_integer(
    "memory_processes", 1, "Memory probes and traffic meters run at once (not timed)."
)
_TRAFFIC_REPLICA_COUNTS = flags.DEFINE_list(
    "traffic_replica_counts", ["2", "4"], "Replica counts of the traffic meter; empty: none."
)
_TRAFFIC_CONFIGURATIONS = flags.DEFINE_list(
    "traffic_configurations", list(traffic.CONFIGURATIONS), "What the traffic meter measures."
)
_TRAFFIC_WIDTH = flags.DEFINE_integer("traffic_width", 256, "Traffic meter MLP layer width.")
_HOST_UPDATE_SIZES = flags.DEFINE_list(
    "host_update_sizes",
    ["1000000", "10000000", "50000000"],
    "Parameter counts of the host Adam micro-benchmark; empty: none.",
)
_HOST_UPDATE_REPETITIONS = flags.DEFINE_integer(
    "host_update_repetitions", 10, "Timed Adam updates per size."
)
_MIXED_SPEED_REPETITIONS = flags.DEFINE_integer(
    "mixed_speed_repetitions",
    5,
    "Timed windows per contestant of the mixed-speed simulation; 0: none.",
    lower_bound=0,
)
_MIXED_SPEED_STEPS_PER_WINDOW = flags.DEFINE_integer(
    "mixed_speed_steps_per_window",
    20,
    "Steps per window of the mixed-speed simulation.",
    lower_bound=1,
)
_MIXED_SPEED_WARMUP_STEPS = flags.DEFINE_integer(
    "mixed_speed_warmup_steps",
    40,
    "Untimed steps per contestant of the mixed-speed simulation (split=auto settles there).",
    lower_bound=1,
)

# --quick values, applied to every flag not given on the command line.
QUICK_OVERRIDES = {
    "models": ["mlp"],
    "device_counts": ["1", "2"],
    "global_batch": 64,
    "repetitions": 3,
    "steps_per_window": 5,
    "warmup_steps": 2,
    "memory_device_counts": ["2"],
    "memory_width": 1024,
    "memory_layers": 2,
    "memory_repetitions": 1,
    "memory_processes": 2,
    "traffic_replica_counts": ["2"],
    # "no strategy" moves nothing by construction; the full run shows it.
    "traffic_configurations": [
        name for name in traffic.CONFIGURATIONS if name != traffic.NO_STRATEGY
    ],
    "traffic_width": 64,
    "host_update_sizes": [],
    "mixed_speed_repetitions": 3,
    "mixed_speed_steps_per_window": 10,
    "mixed_speed_warmup_steps": 30,
}


def _integers(values: Sequence[str], flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in values)
    except ValueError:
        raise app.UsageError(f"--{flag} takes integers, e.g. 1,2,4; received {values}.") from None


def settings_from_flags():
    """The `suite.Settings` the flags ask for, --quick applied to flags left at their default."""
    if _QUICK.value:
        for name, value in QUICK_OVERRIDES.items():
            if not flags.FLAGS[name].present:
                flags.FLAGS[name].value = value
    return suite.Settings(
        models=tuple(_MODELS.value),
        modes=tuple(_MODES.value),
        device_counts=_integers(_DEVICE_COUNTS.value, "device_counts"),
        contestant_names=tuple(_CONTESTANTS.value),
        global_batch=_GLOBAL_BATCH.value,
        repetitions=_REPETITIONS.value,
        steps_per_window=_STEPS_PER_WINDOW.value,
        warmup_steps=_WARMUP_STEPS.value,
        seed=_SEED.value,
        memory_device_counts=_integers(_MEMORY_DEVICE_COUNTS.value, "memory_device_counts"),
        memory_width=_MEMORY_WIDTH.value,
        memory_layers=_MEMORY_LAYERS.value,
        memory_repetitions=_MEMORY_REPETITIONS.value,
        memory_processes=_MEMORY_PROCESSES.value,
        traffic_replica_counts=_integers(_TRAFFIC_REPLICA_COUNTS.value, "traffic_replica_counts"),
        traffic_configurations=tuple(_TRAFFIC_CONFIGURATIONS.value),
        traffic_width=_TRAFFIC_WIDTH.value,
        host_update_sizes=_integers(_HOST_UPDATE_SIZES.value, "host_update_sizes"),
        host_update_repetitions=_HOST_UPDATE_REPETITIONS.value,
        mixed_speed_repetitions=_MIXED_SPEED_REPETITIONS.value,
        mixed_speed_steps_per_window=_MIXED_SPEED_STEPS_PER_WINDOW.value,
        mixed_speed_warmup_steps=_MIXED_SPEED_WARMUP_STEPS.value,
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
    settings = settings_from_flags()
    try:
        settings.validate()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    # Logical CPUs must exist before TensorFlow initializes its devices.
    replica_strategy.logical_devices.split_cpu(settings.max_device_count)
    results = suite.run(settings)
    paths = outputs.write_outputs(results, pathlib.Path(_OUTPUT_DIR.value))
    print(paths["markdown"].read_text())
    print("Wrote " + ", ".join(str(path) for path in paths.values()), flush=True)
    # Skips the teardown of the live workloads, which can hang in TensorFlow (suite.LIVE_WORKLOADS).
    os._exit(0)


if __name__ == "__main__":
    app.run(main)
