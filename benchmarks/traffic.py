"""Bytes that cross between devices in one training step, and bytes of variables per device.

Measured from the step TensorFlow actually executed, not from a formula:
- which tensors cross: the partition graphs of the training function (`enable_run_metadata`),
  where every cross-device edge is a `_Recv` node naming its sender and receiver;
- how many bytes: the executor's memory log (`TF_CPP_VMODULE=log_memory=2`), which logs every
  node output of every step with its dtype and shape. A `_Recv` output is the tensor that crossed.
  `step_stats` is empty for function calls in TensorFlow 2.21 and profiler `_Send` events carry no
  shapes, so the log is the one place these sizes appear.
Input batches reach the replicas through the multi-device iterator's `RemoteCall`, outside the
training function; they are counted apart, from the same log.

The memory log must be switched on before TensorFlow loads, so every configuration runs in a
fresh child process:

    python -m benchmarks.traffic                       # the table, 2 and 4 replicas
    python -m benchmarks.traffic --replica_counts=2 --width=64

Devices: the host (parameter device) is "/cpu:0", the replicas are "/cpu:1" ... "/cpu:N", so
host traffic and replica-to-replica traffic are told apart. On logical CPUs the Send/Recv pairs
exist but share memory: the bytes are what would cross PCIe or NVLink on GPUs, and wall time here
says nothing about them. MirroredStrategy runs with `ReductionToOneDevice()`: on CPUs its default
all-reduce uses collective ops, which exchange data outside Send/Recv and would show nothing. Its
bytes equal an NCCL ring's in total, 2 (N - 1) P.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import inspect
import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence

import tensorflow as tf
from absl import app, flags
from tensorflow.core.framework import types_pb2
from tensorflow.python.eager import context

import replica_strategy
from benchmarks import contestants
from benchmarks.placements import Strategy

NO_STRATEGY = Strategy.NO_STRATEGY
MIRRORED = Strategy.MIRRORED
REPLICA = Strategy.REPLICA
MIRROR_WEIGHTS = Strategy.MIRROR_WEIGHTS
CONFIGURATIONS = (NO_STRATEGY, MIRRORED, REPLICA, MIRROR_WEIGHTS)
HOST = "/cpu:0"
# Pair classes of (sender, receiver).
TO_HOST, FROM_HOST, BETWEEN_REPLICAS = "replica → host", "host → replica", "replica → replica"
PAIR_CLASSES = (FROM_HOST, TO_HOST, BETWEEN_REPLICAS)
_RECV_OPS = ("_Recv", "_HostRecv")
# Not payload: handles, strings and dataset variants cross as references.
_NOT_PAYLOAD = ("DT_STRING", "DT_VARIANT", "DT_RESOURCE")
# Not resolve(): under Bazel the runfiles tree (symlinks) is the repository to run from.
_REPOSITORY = pathlib.Path(__file__).absolute().parent.parent
_LOG_LINE = re.compile(
    r'MemoryLogTensorOutput \{.*?step_id: (-?\d+) kernel_name: "([^"]*)" '
    r"tensor \{ dtype: (\w+) shape \{((?:[^{}]|\{[^{}]*\})*)\}"
)
_DIMENSION = re.compile(r"dim \{ size: (\d+) \}")


class Unavailable(Exception):
    """The configuration does not exist in the installed `replica_strategy`."""


def has_mirror_weights(strategy_class) -> bool:
    """Whether `strategy_class` (a `ReplicaStrategy`) takes `mirror_weights`."""
    return "mirror_weights" in inspect.signature(strategy_class).parameters


@dataclasses.dataclass(frozen=True)
class LoggedTensor:
    """One node output from the memory log."""

    step_id: int
    node: str
    dtype: str
    shape: tuple[int, ...]


def parse_memory_log(lines: Iterable[str]) -> list[LoggedTensor]:
    """The `MemoryLogTensorOutput` records of a memory log, in log order."""
    tensors = []
    for line in lines:
        match = _LOG_LINE.search(line)
        if match:
            step_id, node, dtype, shape = match.groups()
            dimensions = tuple(int(size) for size in _DIMENSION.findall(shape))
            tensors.append(LoggedTensor(int(step_id), node, dtype, dimensions))
    return tensors


def pair_class(sender: str, receiver: str) -> str:
    """FROM_HOST, TO_HOST or BETWEEN_REPLICAS for canonical device names like "/cpu:1"."""
    if sender == HOST:
        return FROM_HOST
    if receiver == HOST:
        return TO_HOST
    return BETWEEN_REPLICAS


def class_totals(pairs: dict[str, int]) -> dict[str, int]:
    """Bytes per pair class from bytes per "sender -> receiver" pair."""
    totals = dict.fromkeys(PAIR_CLASSES, 0)
    for pair, num_bytes in pairs.items():
        sender, receiver = pair.split(" -> ")
        totals[pair_class(sender, receiver)] += num_bytes
    return totals


# The child: runs in a fresh process with the memory log on (see `measure_in_subprocess`).


def _tensor_bytes(tensor: LoggedTensor) -> int:

    size = tf.as_dtype(types_pb2.DataType.Value(tensor.dtype)).size
    count = 1
    for dimension in tensor.shape:
        count *= dimension
    return size * count


def _make_strategy(configuration: str, replicas: int):
    devices = [f"/cpu:{index}" for index in range(1, replicas + 1)]
    if configuration == NO_STRATEGY:
        return None
    if configuration == MIRRORED:
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if configuration == REPLICA:
        return replica_strategy.ReplicaStrategy(devices, parameter_device=HOST)
    if configuration == MIRROR_WEIGHTS:
        if not has_mirror_weights(replica_strategy.ReplicaStrategy):
            raise Unavailable(
                f"this ReplicaStrategy ({replica_strategy.__file__}) has no mirror_weights"
            )
        return replica_strategy.ReplicaStrategy(devices, parameter_device=HOST, mirror_weights=True)
    raise ValueError(
        f"Unknown configuration {configuration!r}; expected one of {list(CONFIGURATIONS)}."
    )


def training_function_graph(run_metadata):
    """The function graph with the most cross-device receives: the training step.

    The iterator's and the callbacks' functions cross little or not at all. None if no function
    ran.
    """
    return max(
        run_metadata.function_graphs,
        key=lambda graph: sum(
            node.op in _RECV_OPS for partition in graph.partition_graphs for node in partition.node
        ),
        default=None,
    )


def _training_recvs(run_metadata) -> dict[str, tuple[str, str]]:
    """{_Recv node: (sender, receiver)} of the training step's function graph."""
    graph = training_function_graph(run_metadata)
    if graph is None:
        return {}
    return {
        node.name: (
            replica_strategy.devices.short_name(node.attr["send_device"].s.decode()),
            replica_strategy.devices.short_name(node.attr["recv_device"].s.decode()),
        )
        for partition in graph.partition_graphs
        for node in partition.node
        if node.op in _RECV_OPS
    }


def _last_step(tensors: list[LoggedTensor], recvs: dict) -> list[LoggedTensor]:
    """The logged `_Recv` outputs of the last step that ran the training function."""
    steps: dict[int, list[LoggedTensor]] = collections.defaultdict(list)
    for tensor in tensors:
        if tensor.node in recvs:
            steps[tensor.step_id].append(tensor)
    # A call of the training function runs most of its _Recv nodes; other functions' nodes
    # that happen to share a name do not.
    calls = [step for step, found in steps.items() if len(found) * 2 >= len(recvs)]
    return steps[calls[-1]] if calls else []


def _input_bytes_per_element(tensors: list[LoggedTensor]) -> int:
    """Median payload of one `RemoteCall` that delivered an input element to a replica."""
    deliveries: dict[int, int] = collections.defaultdict(int)
    for tensor in tensors:
        if tensor.node == "RemoteCall" and tensor.dtype not in _NOT_PAYLOAD:
            deliveries[tensor.step_id] += _tensor_bytes(tensor)
    # Iterator bookkeeping calls return only scalars; an element is the largest kind.
    largest = max(deliveries.values(), default=0)
    elements = [num_bytes for num_bytes in deliveries.values() if num_bytes * 2 > largest]
    return int(statistics.median(elements)) if elements else 0


def measure(configuration: str, replicas: int, width: int, layers: int, steps: int) -> dict:
    """Trains an MLP with Adam `steps` steps under `configuration` and measures the last step.

    Call only in a fresh process whose environment turns the memory log on and sends stderr to
    the file named by REPLICA_STRATEGY_MEMORY_LOG (what `measure_in_subprocess` does).

    Returns:
        A dict: parameter_bytes (P), pairs ({"sender -> receiver": bytes}), input_bytes (input
        elements delivered per step), variable_bytes ({device: bytes of variables there}),
        replica_strategy (where the package was imported from); or {"unavailable": reason}.
    """
    replica_strategy.logical_devices.split_cpu(replicas + 1)
    try:
        strategy = _make_strategy(configuration, replicas)
    except Unavailable as reason:
        return {"unavailable": str(reason)}
    keras = tf.keras
    # Adam's slots are made by the first step: record the variables until the end of `fit`.
    with contestants.recording_variables() as created, contestants.scope(strategy):
        model = keras.Sequential(
            [keras.Input((width,))]
            + [keras.layers.Dense(width, activation="relu") for _ in range(layers)]
            + [keras.layers.Dense(contestants.NUM_CLASSES)]
        )
        model.compile(
            optimizer=keras.optimizers.Adam(0.001),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        batch = 8 * replicas
        features = tf.random.normal((batch, width), seed=0)
        labels = tf.zeros((batch,), tf.int32)
        dataset = tf.data.Dataset.from_tensors((features, labels)).repeat()
        # Partition graphs are reported once, when a function is instantiated: switch on first.
        context.context().enable_run_metadata()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    run_metadata = context.context().export_run_metadata()
    context.context().disable_run_metadata()
    sys.stderr.flush()
    return {
        "parameter_bytes": sum(
            math.prod(variable.shape) * tf.as_dtype(variable.dtype).size
            for variable in model.trainable_weights
        ),
        **_step_bytes(run_metadata),
        "variable_bytes": contestants.variable_bytes_per_device(created),
        "replica_strategy": str(pathlib.Path(replica_strategy.__file__).parent),
    }


def _step_bytes(run_metadata) -> dict:
    log_path = os.environ["REPLICA_STRATEGY_MEMORY_LOG"]
    with open(log_path, encoding="utf-8", errors="replace") as log:
        tensors = parse_memory_log(log)
    recvs = _training_recvs(run_metadata)
    pairs: dict[str, int] = collections.defaultdict(int)
    for tensor in _last_step(tensors, recvs):
        sender, receiver = recvs[tensor.node]
        pairs[f"{sender} -> {receiver}"] += _tensor_bytes(tensor)
    return {"pairs": dict(sorted(pairs.items())), "input_bytes": _input_bytes(tensors, recvs)}


def _input_bytes(tensors: list[LoggedTensor], recvs: dict) -> int:
    """Input bytes per step: one element per replica; 0 when no iterator crosses devices."""
    per_element = _input_bytes_per_element(tensors)
    replicas = {receiver for _, receiver in recvs.values() if receiver != HOST}
    return per_element * max(len(replicas), 1) if per_element else 0


# The parent: one child process per configuration.


def measure_in_subprocess(
    configuration: str, replicas: int, width: int = 256, layers: int = 2, steps: int = 3
) -> dict:
    """`measure` in a fresh process with the memory log on; {"failed": reason} if it fails.

    Returns:
        `measure`'s dict plus "configuration" and "replicas".
    """
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        environment = dict(
            os.environ,
            TF_CPP_VMODULE="log_memory=2",
            TF_CPP_MIN_LOG_LEVEL="0",
            REPLICA_STRATEGY_MEMORY_LOG=log.name,
        )
        # A PYTHONPATH given by the caller comes first, so another `replica_strategy` (a
        # directory holding only that package) is measured with this meter; hence a script,
        # not `-m`, which would put this repository first.
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [os.environ.get("PYTHONPATH"), str(_REPOSITORY)])
        )
        command = [
            sys.executable,
            str(_REPOSITORY / "benchmarks" / "traffic.py"),
            f"--child_configuration={configuration}",
            f"--replica_counts={replicas}",
            f"--width={width}",
            f"--layers={layers}",
            f"--steps={steps}",
        ]
        completed = subprocess.run(
            command, cwd=_REPOSITORY, env=environment, stdout=subprocess.PIPE, stderr=log,
            text=True, check=False,
        )  # fmt: skip
        lines = completed.stdout.strip().splitlines()
        if completed.returncode != 0 or not lines:
            log.seek(0)
            errors = [line for line in log.read().splitlines() if "Error" in line]
            return {
                "configuration": configuration,
                "replicas": replicas,
                "failed": (errors or [f"exit code {completed.returncode}"])[-1][:160],
            }
    return {"configuration": configuration, "replicas": replicas, **json.loads(lines[-1])}


def measure_all(
    replica_counts: Sequence[int],
    configurations: Sequence[str] = CONFIGURATIONS,
    width: int = 256,
    layers: int = 2,
    processes: int = 2,
) -> list[dict]:
    """Every configuration at every replica count, `processes` children at a time."""
    jobs = [(name, count) for count in replica_counts for name in configurations]
    with concurrent.futures.ThreadPoolExecutor(max(1, processes)) as pool:
        return list(
            pool.map(lambda job: measure_in_subprocess(*job, width=width, layers=layers), jobs)
        )


# Tables.


def measured(results: Sequence[dict]) -> list[dict]:
    """The results that hold measurements (not failed, not unavailable)."""
    return [result for result in results if "pairs" in result]


def _multiple(num_bytes: float, parameter_bytes: float) -> str:
    return f"{num_bytes / parameter_bytes:.2f} P"


def traffic_table(results: Sequence[dict]) -> str:
    """Bytes per step by pair class, as multiples of P, one row per configuration."""
    lines = [
        "| Configuration | Replicas | P (bytes) | host → replicas | replicas → host "
        "| replica → replica | input batches (host → replicas) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        head = f"| {result['configuration']} | {result['replicas']} |"
        if "failed" in result or "unavailable" in result:
            reason = result.get("failed") or "not measured: " + result["unavailable"]
            lines.append(f"{head} {reason} | | | | |")
            continue
        parameter_bytes = result["parameter_bytes"]
        totals = class_totals(result["pairs"])
        cells = [_multiple(totals[name], parameter_bytes) for name in PAIR_CLASSES]
        cells.append(_multiple(result["input_bytes"], parameter_bytes))
        lines.append(f"{head} {parameter_bytes:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pairs_table(results: Sequence[dict]) -> str:
    """Bytes per step of every (sender, receiver) pair, as multiples of P."""
    lines = ["| Configuration | Replicas | sender → receiver: bytes / P |", "|---|---|---|"]
    for result in measured(results):
        pairs = ", ".join(
            f"{pair.replace(' -> ', ' → ')}: {num_bytes / result['parameter_bytes']:.2f}"
            for pair, num_bytes in result["pairs"].items()
        )
        lines.append(f"| {result['configuration']} | {result['replicas']} | {pairs or 'none'} |")
    return "\n".join(lines)


def memory_table(results: Sequence[dict]) -> str:
    """Bytes of variables (weights, Adam's two slots, counters) per device, as multiples of P."""
    lines = [
        "| Configuration | Replicas | host (/cpu:0) | each replica device (max) | all devices |",
        "|---|---|---|---|---|",
    ]
    for result in measured(results):
        per_device, parameter_bytes = result["variable_bytes"], result["parameter_bytes"]
        replicas = [num_bytes for device, num_bytes in per_device.items() if device != HOST]
        cells = [
            per_device.get(HOST, 0),
            max(replicas, default=0),
            sum(per_device.values()),
        ]
        lines.append(
            f"| {result['configuration']} | {result['replicas']} | "
            + " | ".join(_multiple(cell, parameter_bytes) for cell in cells)
            + " |"
        )
    return "\n".join(lines)


def define_flags() -> None:
    """The command line's flags; defined only when run as a script, so importing this module
    next to another benchmark script defines no clashing flags."""
    flags.DEFINE_string(
        "child_configuration", None, "Internal: measure this configuration in this process."
    )
    flags.DEFINE_list("replica_counts", ["2", "4"], "Replica counts to measure.")
    flags.DEFINE_integer("width", 256, "Units of each hidden Dense layer (and inputs).")
    flags.DEFINE_integer("layers", 2, "Hidden Dense layers.")
    flags.DEFINE_integer("steps", 3, "Training steps; the last one is measured.")
    flags.DEFINE_integer("processes", 2, "Child processes at a time.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
    counts = [int(count) for count in flags.FLAGS.replica_counts]
    if flags.FLAGS.child_configuration:
        if "REPLICA_STRATEGY_MEMORY_LOG" not in os.environ:
            raise app.UsageError(
                "--child_configuration is internal: run `python -m benchmarks.traffic` without it."
            )
        result = measure(
            flags.FLAGS.child_configuration,
            counts[0],
            flags.FLAGS.width,
            flags.FLAGS.layers,
            flags.FLAGS.steps,
        )
        print(json.dumps(result))
        sys.stdout.flush()
        os._exit(0)  # Skips TensorFlow's teardown of the distributed iterator (slow).
    results = measure_all(
        counts, width=flags.FLAGS.width, layers=flags.FLAGS.layers, processes=flags.FLAGS.processes
    )
    print(traffic_table(results), pairs_table(results), memory_table(results), sep="\n\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
