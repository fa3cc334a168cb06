"""The benchmark run: interleaved throughput windows, memory probes, and the written results.

`benchmark.py` turns flags into a `Settings`, calls `run`, then `outputs.write_outputs`; tests
call them directly with tiny settings.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import os
import pathlib
import random
import subprocess
import sys

import tensorflow as tf
from absl import logging

from benchmarks import contestants as contestants_lib
from benchmarks import machine, traffic, workloads

# Not resolve(): under Bazel the runfiles tree (symlinks) is the repository to run from.
_REPOSITORY = pathlib.Path(__file__).absolute().parent.parent
MEMORY_CONTESTANTS = (*contestants_lib.REPLICA_NAMES, contestants_lib.MIRRORED)
# Every workload built, kept until the process ends. Deleting the custom loop's distributed
# iterator (an endless dataset, read inside a tf.function) of ReplicaStrategy or MirroredStrategy
# on 2 devices takes 20-40 s in TensorFlow 2.21 (CentralStorageStrategy's: 0.3 s; the difference
# is the partial-batch handling, get_next_as_optional), so freeing two dozen workloads at once
# looks like a hang. `benchmark.py` exits without that teardown (os._exit).
LIVE_WORKLOADS: list = []


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure and how long.

    Attributes:
        models: Model names, from `contestants.MODEL_NAMES`.
        modes: From `workloads.MODES`.
        device_counts: Logical CPU counts of the data-parallel strategies.
        contestant_names: Strategies to include, from `contestants.NAMES`.
        global_batch: Rows per step on every device count; divisible by every count.
        repetitions: Timed windows per contestant, interleaved.
        steps_per_window: Steps in each timed window.
        warmup_steps: Untimed steps per contestant and mode before the first window.
        seed: Seeds the order of contestants within each repetition.
        memory_device_counts: Replica counts of the memory probes; empty skips them.
        memory_width: Units of each Dense layer of the memory probe's MLP.
        memory_layers: Dense layers of the memory probe's MLP.
        memory_batch_size: Global batch of the memory probe's two train steps.
        memory_repetitions: Fresh processes per memory configuration.
        memory_processes: Memory probes run at the same time (they are not timed).
        traffic_replica_counts: Replica counts of the traffic meter (benchmarks/traffic.py);
            empty skips it.
        traffic_configurations: From `traffic.CONFIGURATIONS`.
        traffic_width: Units of each hidden Dense layer of the traffic meter's MLP.
        host_update_sizes: Parameter counts of the host Adam micro-benchmark
            (benchmarks/host_update.py); empty skips it.
        host_update_repetitions: Timed updates per size.
        mixed_speed_repetitions: Timed windows per contestant of the mixed-speed SIMULATION
            (benchmarks/mixed_speeds.py: one replica slower per row, split even / by speed /
            auto, MirroredStrategy); 0 skips it.
        mixed_speed_steps_per_window: Steps in each of its windows.
        mixed_speed_warmup_steps: Its untimed steps per contestant first (`auto` settles there).
    """

    models: tuple[str, ...] = contestants_lib.MODEL_NAMES
    modes: tuple[str, ...] = workloads.MODES
    device_counts: tuple[int, ...] = (1, 2, 4)
    contestant_names: tuple[str, ...] = contestants_lib.NAMES
    global_batch: int = 256
    repetitions: int = 10
    steps_per_window: int = 20
    warmup_steps: int = 3
    seed: int = 0
    memory_device_counts: tuple[int, ...] = (1, 2, 4)
    memory_width: int = 4096
    memory_layers: int = 3
    memory_batch_size: int = 8
    memory_repetitions: int = 2
    memory_processes: int = 1
    traffic_replica_counts: tuple[int, ...] = (2, 4)
    traffic_configurations: tuple[str, ...] = traffic.CONFIGURATIONS
    traffic_width: int = 256
    host_update_sizes: tuple[int, ...] = (1_000_000, 10_000_000, 50_000_000)
    host_update_repetitions: int = 10
    mixed_speed_repetitions: int = 5
    mixed_speed_steps_per_window: int = 20
    mixed_speed_warmup_steps: int = 40

    def validate(self) -> None:
        """Raises ValueError naming the setting that cannot run."""
        for count in self.device_counts + self.memory_device_counts + self.traffic_replica_counts:
            if count < 1:
                raise ValueError(f"Device counts must be >= 1; received {count}.")
        uneven = [count for count in self.device_counts if self.global_batch % count]
        if uneven:
            raise ValueError(
                f"global_batch={self.global_batch} does not split evenly on {uneven} devices "
                "(MirroredStrategy crashes on uneven batches); use a multiple of every count."
            )
        unknown = sorted(set(self.models) - set(contestants_lib.MODEL_NAMES))
        unknown += sorted(set(self.modes) - set(workloads.MODES))
        unknown += sorted(set(self.traffic_configurations) - set(traffic.CONFIGURATIONS))
        if unknown:
            raise ValueError(
                f"Unknown models, modes or traffic configurations {unknown}; expected models from "
                f"{list(contestants_lib.MODEL_NAMES)}, modes from {list(workloads.MODES)} and "
                f"configurations from {list(traffic.CONFIGURATIONS)}."
            )
        contestants_lib.contestants(self.device_counts, self.contestant_names)

    @property
    def max_device_count(self) -> int:
        return max(self.device_counts)


def _failure(error: Exception) -> str:
    """'failed: <type>: <first line of the message that is not a TF traceback line>'."""
    lines = [
        line.strip()
        for line in str(error).splitlines()
        if line.strip()
        and not line.startswith((" ", "\t", "Graph execution error", "Detected at node"))
    ] or [""]
    reason = f"{type(error).__name__}: {lines[0]}"
    return "failed: " + (reason if len(reason) <= 100 else reason[:97] + "...")


def _build_workloads(settings: Settings, cells: dict) -> list:
    """Builds every (model, contestant) and warms every mode up; failures go into `cells`."""
    tasks = []
    for model in settings.models:
        for contestant in contestants_lib.contestants(
            settings.device_counts, settings.contestant_names
        ):
            keys = [(mode, model, contestant.label) for mode in settings.modes]
            for key in keys:
                cells[key] = workloads.Cell(contestant)
            try:
                workload = workloads.Workload(contestant, model, settings.global_batch)
                LIVE_WORKLOADS.append(workload)
            except Exception as error:  # noqa: BLE001  (a failing contestant fills its cells)
                logging.warning("%s on %s failed to build: %s", contestant.label, model, error)
                for key in keys:
                    cells[key].failed = _failure(error)
                continue
            for mode, key in zip(settings.modes, keys, strict=True):
                try:
                    workload.time_window(mode, settings.warmup_steps)
                    tasks.append((workload, mode, cells[key]))
                except Exception as error:  # noqa: BLE001
                    logging.warning("%s, %s on %s failed: %s", contestant.label, mode, model, error)
                    cells[key].failed = _failure(error)
    return tasks


def measure_throughput(settings: Settings) -> dict:
    """Times every contestant, interleaved: each repetition runs one window of each.

    Returns:
        {(mode, model, contestant label): workloads.Cell}.
    """
    cells: dict = {}
    tasks = _build_workloads(settings, cells)
    order = random.Random(settings.seed)
    for repetition in range(settings.repetitions):
        order.shuffle(tasks)  # Noise then hits every contestant alike, in no fixed position.
        for workload, mode, cell in tasks:
            if cell.failed:
                continue
            try:
                cell.seconds.append(workload.time_window(mode, settings.steps_per_window))
            except Exception as error:  # noqa: BLE001
                cell.failed = _failure(error)
        logging.info("Repetition %d of %d done.", repetition + 1, settings.repetitions)
    return cells


def run_memory_probe(contestant_name: str, device_count: int, settings: Settings) -> dict:
    """Runs `memory_probe.py` in a fresh process; returns its result or {"failed": reason}."""
    command = [
        sys.executable,
        str(_REPOSITORY / "benchmarks" / "memory_probe.py"),
        f"--contestant={contestant_name}",
        f"--device_count={device_count}",
        f"--width={settings.memory_width}",
        f"--layers={settings.memory_layers}",
        f"--batch_size={settings.memory_batch_size}",
    ]
    return _run_json(command)


def measure_memory(settings: Settings) -> list[dict]:
    """Peak RSS and variable bytes of ReplicaStrategy and MirroredStrategy per replica count.

    Returns:
        [{"contestant", "device_count", "runs": [memory_probe results]}].
    """
    configurations = [
        (name, count)
        for count in settings.memory_device_counts
        for name in MEMORY_CONTESTANTS
        if name in settings.contestant_names
    ]
    jobs = [config for config in configurations for _ in range(settings.memory_repetitions)]
    with concurrent.futures.ThreadPoolExecutor(max(1, settings.memory_processes)) as pool:
        runs = list(pool.map(lambda job: run_memory_probe(*job, settings), jobs))
    return [
        {
            "contestant": name,
            "device_count": count,
            "runs": [run for job, run in zip(jobs, runs, strict=True) if job == (name, count)],
        }
        for name, count in configurations
    ]


def measure_traffic(settings: Settings) -> list[dict]:
    """benchmarks/traffic.py's configurations; mirror_weights only where it exists."""
    configurations = settings.traffic_configurations
    missing = []
    if not contestants_lib.HAS_MIRROR_WEIGHTS:
        configurations = tuple(name for name in configurations if name != traffic.MIRROR_WEIGHTS)
        reason = "this ReplicaStrategy has no mirror_weights parameter"
        missing = [
            {"configuration": traffic.MIRROR_WEIGHTS, "replicas": count, "unavailable": reason}
            for count in settings.traffic_replica_counts
        ]
    measured = traffic.measure_all(
        settings.traffic_replica_counts,
        configurations,
        width=settings.traffic_width,
        processes=max(1, settings.memory_processes),
    )
    return measured + missing


def measure_host_update(settings: Settings) -> dict:
    """Runs `host_update.py` in a fresh process (nothing else in it competes for memory)."""
    command = [
        sys.executable,
        str(_REPOSITORY / "benchmarks" / "host_update.py"),
        "--sizes=" + ",".join(str(size) for size in settings.host_update_sizes),
        f"--repetitions={settings.host_update_repetitions}",
    ]
    return _run_json(command)


def measure_mixed_speeds(settings: Settings) -> dict:
    """Runs `mixed_speeds.py` in a fresh process (its own 3 logical CPUs), timed alone."""
    command = [
        sys.executable,
        str(_REPOSITORY / "benchmarks" / "mixed_speeds.py"),
        f"--repetitions={settings.mixed_speed_repetitions}",
        f"--steps_per_window={settings.mixed_speed_steps_per_window}",
        f"--warmup_steps={settings.mixed_speed_warmup_steps}",
    ]
    return _run_json(command)


def _run_json(command: list[str]) -> dict:
    """Runs a benchmark script; its last stdout line is JSON, else {"failed": reason}."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The caller's PYTHONPATH first (see traffic.measure_in_subprocess), so a script, not `-m`.
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.environ.get("PYTHONPATH"), str(_REPOSITORY)])
    )
    completed = subprocess.run(
        command, cwd=_REPOSITORY, env=environment, capture_output=True, text=True, check=False
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        errors = completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"]
        return {"failed": errors[-1][:120]}
    return json.loads(lines[-1])


def run(settings: Settings) -> dict:
    """Measures throughput; then memory and traffic at once (child processes, not timed); then
    the host update alone (timed). Returns everything `write_outputs` needs.

    Needs `settings.max_device_count` logical CPUs (`replica_strategy.logical_devices.split_cpu`).
    """
    settings.validate()
    cells = measure_throughput(settings)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        memory = pool.submit(measure_memory, settings) if settings.memory_device_counts else None
        moved = pool.submit(measure_traffic, settings) if settings.traffic_replica_counts else None
        memory = memory.result() if memory else []
        moved = moved.result() if moved else []
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": {
            **machine.description(),
            "tensorflow": tf.__version__,
            "keras": tf.keras.version(),
            "replica_strategy": str(pathlib.Path(contestants_lib.replica_strategy.__file__).parent),
        },
        "settings": dataclasses.asdict(settings),
        "cells": cells,
        "memory": memory,
        "traffic": moved,
        "host_update": measure_host_update(settings) if settings.host_update_sizes else {},
        "mixed_speeds": (
            measure_mixed_speeds(settings) if settings.mixed_speed_repetitions else {}
        ),
    }
