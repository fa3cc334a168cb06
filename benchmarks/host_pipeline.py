"""Whether the host's part of a training step can run as a pipeline, one variable at a time.

With the weights on the host, each step ends with a chain on the host's side: gradients arrive
from the replicas, the optimizer updates the masters, and (with `mirror_weights`) the new values
go back out. If every write waits only for its own variable's gradient, and every value sent out
only for its own variable's update, TensorFlow's executor, which runs an op as soon as its inputs
are ready, overlaps the stages across variables: one variable's gradient crosses PCIe while
another's is updated and a third's is sent back. Then the chain costs about its slowest stage,
not the sum of its stages (`pipelined_milliseconds` in benchmarks/gpu_model/costs.py). One
op that joins all gradients first (a global norm for `global_clipnorm`, the all-finite check of
loss scaling) makes it a barrier and the stages run one after another.

That is a property of the executed graph, not of timing, so it is read from the partition graphs
of the step TensorFlow ran (`enable_run_metadata`), linking each `_Recv` to its `_Send`:
- gradient arrivals: float tensors a replica device sends to the host that a write waits for;
- writes: host ops that write a variable and wait for at least one arrival;
- weight sends: host -> replica tensors that wait for at least one arrival.
Logical CPUs stand for the devices; no time is measured.

    python -m benchmarks.host_pipeline      # the table, 2 and 4 replicas
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow.python.eager import context

import replica_strategy
from benchmarks import traffic
from replica_strategy import devices, logical_devices

HOST = traffic.HOST  # the parameter device; the replicas are /cpu:1 ... /cpu:N
# Ops that write a resource variable: Keras 3's Adam ends with AssignSubVariableOp, FusedAdam and
# tf_keras' legacy optimizers run one ResourceApply* kernel.
_WRITE_OPS = ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp")
_WRITE_OP_PREFIX = "ResourceApply"


@dataclasses.dataclass(frozen=True)
class HostWaits:
    """What the host's writes and outgoing weights wait for, in one executed step.

    Attributes:
        gradient_arrivals: Float tensors the replica devices send to the host that a write on
            the host waits for.
        write_waits: For each write on the host that waits for gradients, how many of them
            it waits for (directly or through other ops, on any device).
        weight_send_waits: The same for each tensor the host sends to a replica after the
            gradients arrived (the new weights).
        float_sends: Float tensors the host sends to the replica devices in the step, whatever
            they wait for (an optimizer that writes a variable twice sends it twice).
    """

    gradient_arrivals: int
    write_waits: tuple[int, ...]
    weight_send_waits: tuple[int, ...]
    float_sends: int

    def pipelined(self, arrivals_per_variable: int) -> bool:
        """Whether nothing waits for more than one variable's gradients."""
        return max(self.write_waits + self.weight_send_waits, default=0) <= arrivals_per_variable


def _is_write(op: str) -> bool:
    return op in _WRITE_OPS or op.startswith(_WRITE_OP_PREFIX)


def host_waits(function_graph, host: str = HOST) -> HostWaits:
    """Reads `HostWaits` from one function's partition graphs (a `RunMetadata.FunctionGraphs`)."""
    nodes = {
        node.name: node for partition in function_graph.partition_graphs for node in partition.node
    }

    def rendezvous_key(node):
        return tuple(node.attr[key].s for key in ("tensor_name", "send_device", "recv_device"))

    sender_of = {rendezvous_key(node): node.name for node in nodes.values() if node.op == "_Send"}

    def inputs(node):
        names = [name.lstrip("^").split(":")[0] for name in node.input]
        if node.op == "_Recv" and rendezvous_key(node) in sender_of:
            names.append(sender_of[rendezvous_key(node)])
        return [name for name in names if name in nodes]

    ancestors_cache: dict[str, frozenset[str]] = {}

    def ancestors(name):
        # Iterative post-order: graphs of real models are deeper than Python's recursion limit.
        stack = [name]
        while stack:
            current = stack[-1]
            pending = [item for item in inputs(nodes[current]) if item not in ancestors_cache]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            found = set()
            for item in inputs(nodes[current]):
                found.add(item)
                found |= ancestors_cache[item]
            ancestors_cache[current] = frozenset(found)
        return ancestors_cache[name]

    def on_host(node):
        return devices.short_name(node.device) == host

    floats = (
        tf.float32.as_datatype_enum,
        tf.float16.as_datatype_enum,
        tf.bfloat16.as_datatype_enum,
    )
    arrivals = {
        node.name
        for node in nodes.values()
        if node.op == "_Recv"
        and on_host(node)
        and devices.short_name(node.attr["send_device"].s.decode()) != host
        and node.attr["tensor_type"].type in floats
    }
    sends_to_replicas = [
        node
        for node in nodes.values()
        if node.op == "_Send"
        and on_host(node)
        and devices.short_name(node.attr["recv_device"].s.decode()) != host
    ]
    float_sends = [node.name for node in sends_to_replicas if node.attr["T"].type in floats]
    writes = [
        node.name
        for node in nodes.values()
        if on_host(node) and _is_write(node.op) and ancestors(node.name) & arrivals
    ]
    weight_sends = [node.name for node in sends_to_replicas if ancestors(node.name) & arrivals]
    # Replicas also send scalars (their loss terms): a gradient is what some write waits for.
    gradients = frozenset().union(*(ancestors(name) & arrivals for name in writes))
    return HostWaits(
        gradient_arrivals=len(gradients),
        write_waits=tuple(sorted(len(ancestors(name) & gradients) for name in writes)),
        weight_send_waits=tuple(sorted(len(ancestors(name) & gradients) for name in weight_sends)),
        float_sends=len(float_sends),
    )


def measure(replicas: int, mirror_weights: bool, optimizer: str, layers: int = 3) -> HostWaits:
    """Trains an MLP one epoch with `fit` and reads `HostWaits` from its step.

    Needs `replicas + 1` logical CPUs ("/cpu:0" is the host).

    Args:
        replicas: Replica devices, "/cpu:1" ... "/cpu:N".
        mirror_weights: `ReplicaStrategy`'s placement.
        optimizer: "adam" (Keras 3), "fused_adam" (`replica_strategy.FusedAdam`), or either with
            "+global_clipnorm" (a global norm over all gradients), "+weight_decay" (0.004, as
            Keras' AdamW) or "+loss_scale" (Keras' `LossScaleOptimizer`).
        layers: Hidden Dense layers; each adds two trainable variables.
    """
    name, _, modifier = optimizer.partition("+")
    optimizer_class = {"adam": keras.optimizers.Adam, "fused_adam": replica_strategy.FusedAdam}[
        name
    ]
    strategy = replica_strategy.ReplicaStrategy(
        [f"/cpu:{index}" for index in range(1, replicas + 1)],
        parameter_device=HOST,
        mirror_weights=mirror_weights,
    )
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((8,))]
            + [keras.layers.Dense(16, activation="relu") for _ in range(layers)]
            + [keras.layers.Dense(1)]
        )
        built = optimizer_class(
            1e-3,
            global_clipnorm=1.0 if modifier == "global_clipnorm" else None,
            weight_decay=0.004 if modifier == "weight_decay" else None,
        )
        if modifier == "loss_scale":
            built = keras.optimizers.LossScaleOptimizer(built)
        elif modifier not in ("", "global_clipnorm", "weight_decay"):
            raise ValueError(f"Unknown optimizer modifier in optimizer={optimizer!r}.")
        model.compile(optimizer=built, loss="mse")
    rows = 8 * replicas
    features = np.random.default_rng(0).normal(size=(rows, 8)).astype("float32")
    targets = np.zeros((rows, 1), "float32")
    context.context().enable_run_metadata()
    try:
        model.fit(features, targets, batch_size=rows, epochs=1, verbose=0)
        run_metadata = context.context().export_run_metadata()
    finally:
        context.context().disable_run_metadata()
    return host_waits(traffic.training_function_graph(run_metadata))


CASES = (
    (True, "adam"),
    (True, "fused_adam"),
    (True, "fused_adam+global_clipnorm"),
    (True, "adam+weight_decay"),
    (True, "fused_adam+weight_decay"),
    (False, "adam"),
    (False, "fused_adam"),
)


def table(replica_counts: Sequence[int]) -> str:
    """A Markdown table of `HostWaits` per placement, optimizer and replica count."""
    lines = [
        "| Placement | Optimizer | Replicas | Gradient arrivals at the host | Most any write "
        "waits for | Most any weight sent back waits for | Float tensors sent to the replicas "
        "| Per-variable pipeline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for replicas in replica_counts:
        for mirror_weights, optimizer in CASES:
            waits = measure(replicas, mirror_weights, optimizer)
            per_variable = 1 if mirror_weights else replicas
            sends = max(waits.weight_send_waits, default=None)
            lines.append(
                f"| {'`mirror_weights`' if mirror_weights else 'default'} | {optimizer} | "
                f"{replicas} | {waits.gradient_arrivals} | {max(waits.write_waits)} | "
                f"{'none sent' if sends is None else sends} | {waits.float_sends} | "
                f"{'yes' if waits.pipelined(per_variable) else 'no'} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
    replica_counts = [int(count) for count in flags.FLAGS.replica_counts]
    logical_devices.split_cpu(max(replica_counts) + 1)
    print(table(replica_counts))


if __name__ == "__main__":
    flags.DEFINE_list("replica_counts", ["2", "4"], "Replica devices, after the host /cpu:0.")
    app.run(main)
