"""Step time of data-parallel training on N GPUs, by where the weights live.

Each placement's step is compute (the measured single-GPU step at the replica's batch) plus the
bytes it moves over PCIe and NVLink, the host's sum of gradient copies and the optimizer update,
from the facts in `hardware.py` and the bytes per step `benchmarks/traffic.py` measured:

* CPU-hosted, `ReplicaStrategy()`: every step each GPU reads the float32 weights over PCIe and
  sends its gradients back; the host sums the N copies and runs the optimizer update. Pinned and
  pageable host memory are two rows because they bound the PCIe bandwidth.
* `ReplicaStrategy(mirror_weights=True)`: a working copy on each GPU; the gradients are
  all-reduced among the GPUs (NCCL), one summed copy goes to the host, which runs the update once
  and sends the new weights to GPU 0, which relays them to the others. A second row overlaps the
  update with the next step (one step delayed, a design not built).
* `/gpu:0`-hosted, `ReplicaStrategy(parameter_device="/gpu:0")`: the same flow over NVLink; GPU 0
  sends N - 1 weight copies, receives N - 1 gradient copies and sums them in HBM.
* Mirrored, `tf.distribute.MirroredStrategy`: a weight copy per GPU, NCCL ring all-reduce.
"""

import dataclasses
import math
from collections.abc import Sequence

from benchmarks.gpu_model.hardware import (
    BFLOAT16_BYTES,
    BYTES_PER_GIGABYTE,
    FLOAT32_BYTES,
    Hardware,
    ModelSpec,
)
from benchmarks.placements import HostOptimizer, Placement, StepPlacement, find, placement_of

STEP_PLACEMENTS = tuple(StepPlacement)
DEFAULT_PER_REPLICA_BATCHES = (32, 128)  # the measured batches
DEFAULT_GLOBAL_BATCH = 256  # 8 GPUs still get the measured 32 each
DEFAULT_REPLICA_COUNTS = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Bytes crossing devices per training step, in multiples of P (the weights' bytes).

    Attributes:
        from_host: Host -> replica devices, all replicas together.
        to_host: Replica devices -> host.
        between_replicas: Replica device -> replica device.
    """

    from_host: float
    to_host: float
    between_replicas: float


# benchmarks/traffic.py, run on each placement's strategy (`fit`, Adam, host /cpu:0, replicas
# /cpu:1 ... /cpu:N; the table in benchmarks/latest/results.md): bytes per step measured from the
# executed step. MirroredStrategy and mirror_weights reduce among the replicas with
# ReductionToOneDevice there: N - 1 gradients to replica 0; MirroredStrategy sends N - 1 sums
# back, mirror_weights sends N - 1 relayed weights instead (the all-reduce's broadcast half is
# pruned).
MEASURED_TRAFFIC = {
    Placement.CPU: {2: Traffic(2.0, 2.0, 0.0), 4: Traffic(4.0, 4.0, 0.0)},
    Placement.MIRROR_WEIGHTS: {2: Traffic(1.0, 1.0, 2.0), 4: Traffic(1.0, 1.0, 6.0)},
    Placement.MIRRORED: {2: Traffic(0.0, 0.0, 2.0), 4: Traffic(0.0, 0.0, 6.0)},
}


def traffic(placement: Placement | StepPlacement | str, replicas: int) -> Traffic:
    """Bytes per step in multiples of P at any N: the rule `MEASURED_TRAFFIC` shows at N = 2, 4.

    CPU-hosted: each replica reads the weights and sends its gradient (N P each way).
    mirror_weights: one summed gradient to the host, one updated copy back, and 2 (N - 1) P among
    the replicas (the reduction's N - 1 and the relay's N - 1). Mirrored: 2 (N - 1) P among them.

    Args:
        placement: A `Placement`, or a `StepPlacement` (its placement's traffic).
        replicas: GPUs.

    Raises:
        ValueError: For a placement whose traffic was not measured.
    """
    base = placement_of(placement)
    if base == Placement.CPU:
        return Traffic(replicas, replicas, 0.0)
    if base == Placement.MIRROR_WEIGHTS:
        return Traffic(1.0, 1.0, 2.0 * (replicas - 1))
    if base == Placement.MIRRORED:
        return Traffic(0.0, 0.0, 2.0 * (replicas - 1))
    raise ValueError(
        f"No measured traffic for placement={str(placement)!r}; measured: "
        f"{sorted(map(str, MEASURED_TRAFFIC))}."
    )


def transfer_milliseconds(num_bytes: float, gigabytes_per_second: float) -> float:
    """Milliseconds to move or stream `num_bytes` at `gigabytes_per_second` (1e9 bytes/s)."""
    return 1e3 * num_bytes / (gigabytes_per_second * BYTES_PER_GIGABYTE)


def piecewise_linear(points: Sequence[tuple[float, float]], x: float) -> float:
    """Interpolates between (x, y) points and extends the end segments beyond them.

    Args:
        points: At least two (x, y) pairs with distinct x, in any order.
        x: Where to evaluate.

    Returns:
        The interpolated or extrapolated y.
    """
    ordered = sorted(points)
    segment = 0
    while segment < len(ordered) - 2 and x > ordered[segment + 1][0]:
        segment += 1
    (x0, y0), (x1, y1) = ordered[segment], ordered[segment + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def replica_compute_milliseconds(model: ModelSpec, precision: str, batch: int) -> float:
    """One GPU's step at `batch` rows: exact at the measured batches, linear in batch elsewhere."""
    return piecewise_linear(model.step_milliseconds[precision], batch)


@dataclasses.dataclass(frozen=True)
class Scaling:
    """How the batch grows with the number of GPUs.

    Attributes:
        kind: "weak" (`batch` rows per GPU) or "strong" (`batch` rows per step, split).
        batch: The per-GPU batch (weak) or the global batch (strong).
    """

    kind: str
    batch: int

    def per_replica_batch(self, replicas: int) -> int:
        """Rows on the busiest GPU; an uneven split gives it ceil(B / N)."""
        return self.batch if self.kind == "weak" else math.ceil(self.batch / replicas)

    def global_batch(self, replicas: int) -> int:
        """Rows per step over all GPUs."""
        return self.batch * replicas if self.kind == "weak" else self.batch

    @property
    def title(self) -> str:
        if self.kind == "weak":
            return f"{self.batch} per GPU (weak scaling)"
        return f"global batch {self.batch} (strong scaling)"


def default_scalings() -> tuple[Scaling, ...]:
    """Weak scaling at the measured batches, then strong scaling at the default global batch."""
    weak = tuple(Scaling("weak", batch) for batch in DEFAULT_PER_REPLICA_BATCHES)
    return (*weak, Scaling("strong", DEFAULT_GLOBAL_BATCH))


# Host side: PCIe copies, the sum of gradient copies, the optimizer update.


def pcie_gbps_per_gpu(hardware: Hardware, replicas: int, to_device: bool, pinned: bool) -> float:
    """Bandwidth one GPU gets to or from the host while all N GPUs copy at once.

    GPUs fill PCIe switches in order (GPUs 0 and 1 share the first uplink), so min(N, sharing)
    GPUs split one uplink. A pageable copy is also capped by its measured single-GPU rate, since
    the CPU stages it through a pinned buffer.

    Args:
        hardware: Measured copy bandwidths and the uplink sharing.
        replicas: GPUs copying at once.
        to_device: Direction, host to GPU if True.
        pinned: Whether the host buffers are pinned.

    Returns:
        GB/s per GPU.
    """
    if to_device:
        pinned_gbps, pageable_gbps = (
            hardware.host_to_device_pinned_gbps,
            hardware.host_to_device_pageable_gbps,
        )
    else:
        pinned_gbps, pageable_gbps = (
            hardware.device_to_host_pinned_gbps,
            hardware.device_to_host_pageable_gbps,
        )
    link_share = pinned_gbps / min(replicas, hardware.gpus_per_pcie_uplink)
    return link_share if pinned else min(pageable_gbps, link_share)


def host_sum_milliseconds(hardware: Hardware, replicas: int, gradient_bytes: float) -> float:
    """Host time to add N gradient copies: the measured times, interpolated in N, scaled by bytes.

    Args:
        hardware: The measured host sums.
        replicas: Gradient copies; one needs no sum.
        gradient_bytes: Bytes of one copy.

    Returns:
        Milliseconds.
    """
    if replicas < 2:
        return 0.0
    reference_bytes = hardware.host_sum_parameter_count * FLOAT32_BYTES
    reference_milliseconds = piecewise_linear(hardware.host_sum_milliseconds, replicas)
    return reference_milliseconds * gradient_bytes / reference_bytes


def host_streaming_gbps(hardware: Hardware) -> float:
    """Host memory bandwidth implied by the measured sums.

    Each extra copy in the sum is one more parameter-sized read, so the least-squares slope of sum
    time against N is that read's time. The intercept (about 9 ms at 25.6M parameters) is the
    freshly allocated output, which an in-place optimizer update does not pay.

    Args:
        hardware: The measured host sums.

    Returns:
        GB/s.
    """
    if hardware.host_gbps is not None:
        return hardware.host_gbps
    counts = [count for count, _ in hardware.host_sum_milliseconds]
    times = [milliseconds for _, milliseconds in hardware.host_sum_milliseconds]
    mean_count, mean_time = sum(counts) / len(counts), sum(times) / len(times)
    covariance = sum((c - mean_count) * (t - mean_time) for c, t in zip(counts, times, strict=True))
    milliseconds_per_copy = covariance / sum((c - mean_count) ** 2 for c in counts)
    copy_bytes = hardware.host_sum_parameter_count * FLOAT32_BYTES
    return copy_bytes / (milliseconds_per_copy * 1e-3) / BYTES_PER_GIGABYTE


def host_adam_passes(hardware: Hardware) -> float:
    """Parameter-sized passes over memory that the host's Adam update costs (measured)."""
    if hardware.host_optimizer == HostOptimizer.KERAS:
        return hardware.keras_adam_passes
    if hardware.host_optimizer == HostOptimizer.FUSED:
        return hardware.fused_adam_passes
    raise ValueError(
        f"Unknown host_optimizer={hardware.host_optimizer!r}; expected 'keras' or 'fused'."
    )


def host_update_milliseconds(hardware: Hardware, parameter_count: int) -> float:
    """Host time of one Adam update over float32 weights, bound by memory bandwidth."""
    streamed_bytes = host_adam_passes(hardware) * parameter_count * FLOAT32_BYTES
    return transfer_milliseconds(streamed_bytes, host_streaming_gbps(hardware))


def gpu_update_extra_milliseconds(hardware: Hardware, parameter_count: int) -> float:
    """Adam on a GPU beyond the SGD update inside the measured step, at HBM speed."""
    extra_passes = max(0.0, host_adam_passes(hardware) - hardware.measured_step_update_passes)
    return transfer_milliseconds(
        extra_passes * parameter_count * FLOAT32_BYTES, hardware.gpu_memory_gbps
    )


# Step time per placement.


@dataclasses.dataclass(frozen=True)
class StepTime:
    """One training step on the busiest GPU.

    Attributes:
        compute_ms: One replica's forward + backward (+ the on-GPU update that was measured).
        transfer_ms: Weights to the replicas and gradients off them.
        reduce_ms: Summing the gradient copies, and any update not inside `compute_ms`.
        background_ms: Work that runs beside the next step by design (a one-step-delayed host
            update): it costs time only when it outlasts the rest of the step.
        pipelined_ms: Of `transfer_ms` + `reduce_ms`, the time the host's per-variable pipeline
            hides (`pipelined_milliseconds`): stages of different variables at once.
    """

    compute_ms: float
    transfer_ms: float
    reduce_ms: float
    background_ms: float = 0.0
    pipelined_ms: float = 0.0

    @property
    def communication_ms(self) -> float:
        return self.transfer_ms + self.reduce_ms - self.pipelined_ms

    @property
    def serial_ms(self) -> float:
        """Nothing overlaps (but the background work): the upper bound."""
        return max(self.compute_ms + self.communication_ms, self.background_ms)

    @property
    def overlapped_ms(self) -> float:
        """The shorter of compute and communication fully hidden: the lower bound."""
        return max(self.compute_ms, self.communication_ms, self.background_ms)


def pipelined_milliseconds(stage_milliseconds: Sequence[float], largest_fraction: float) -> float:
    """A bound on a chain of stages run as a pipeline over variables of different sizes.

    Each variable goes through every stage in order, each stage handles one variable at a time,
    and a variable's time in a stage is its share of that stage's total (a permutation flow
    shop). Any chain of waits runs through each stage over a run of variables, and consecutive
    runs share one variable, so the makespan is at most the slowest stage's total plus, per
    stage change, the shared variable's time in the next stage: at most
    max(T) + f_max * sum(T), and never more than the stages one after another, sum(T).
    benchmarks/host_pipeline.py shows from the executed graph that the host's chain has no
    barrier between variables, so TensorFlow's executor can run it so.

    Args:
        stage_milliseconds: Each stage's total over all variables, T.
        largest_fraction: The largest variable's share of the parameters, f_max.

    Returns:
        Milliseconds.
    """
    serial = sum(stage_milliseconds)
    return min(serial, max(stage_milliseconds, default=0.0) + largest_fraction * serial)


def cpu_hosted_step(
    hardware: Hardware,
    parameter_count: int,
    replicas: int,
    gradient_bytes: float,
    pinned: bool,
    largest_fraction: float = 1.0,
) -> StepTime:
    """Weights on the host: PCIe both ways, then the host sums and updates. Zero compute.

    Each GPU's link carries its share of the measured traffic, 1/N of `traffic("cpu", N)`.
    The gradients' copies, the sum and the update form the host's per-variable pipeline.
    """
    moved = traffic(Placement.CPU, replicas)
    weight_bytes = parameter_count * FLOAT32_BYTES * moved.from_host / replicas
    weights_ms = transfer_milliseconds(
        weight_bytes, pcie_gbps_per_gpu(hardware, replicas, to_device=True, pinned=pinned)
    )
    gradients_ms = transfer_milliseconds(
        gradient_bytes * moved.to_host / replicas,
        pcie_gbps_per_gpu(hardware, replicas, to_device=False, pinned=pinned),
    )
    sum_ms = host_sum_milliseconds(hardware, replicas, gradient_bytes)
    update_ms = host_update_milliseconds(hardware, parameter_count)
    chain = (gradients_ms, sum_ms, update_ms)
    return StepTime(
        0.0,
        weights_ms + gradients_ms,
        sum_ms + update_ms,
        pipelined_ms=sum(chain) - pipelined_milliseconds(chain, largest_fraction),
    )


def gpu0_hosted_step(
    hardware: Hardware, parameter_count: int, replicas: int, gradient_bytes: float
) -> StepTime:
    """Weights on GPU 0, whose one-way NVLink carries N - 1 weight and gradient copies.

    The sum streams N copies in and one out of HBM; GPU 0 runs Adam, whose passes beyond the
    measured SGD's are compute.
    """
    update_ms = gpu_update_extra_milliseconds(hardware, parameter_count)
    if replicas < 2:
        return StepTime(update_ms, 0.0, 0.0)
    peer_bytes = (replicas - 1) * (parameter_count * FLOAT32_BYTES + gradient_bytes)
    transfer_ms = transfer_milliseconds(peer_bytes, hardware.nvlink_gbps_per_direction)
    reduce_ms = transfer_milliseconds((replicas + 1) * gradient_bytes, hardware.gpu_memory_gbps)
    return StepTime(update_ms, transfer_ms, reduce_ms)


def all_reduce_milliseconds(hardware: Hardware, replicas: int, gradient_bytes: float) -> float:
    """An NCCL ring: each GPU's link carries 1/N of the measured 2 (N - 1) P, at NVLink speed.

    Its adds run on arrival and count as free.
    """
    ring_bytes = traffic(Placement.MIRRORED, replicas).between_replicas / replicas * gradient_bytes
    return transfer_milliseconds(ring_bytes, hardware.nvlink_gbps_per_direction)


def mirrored_step(
    hardware: Hardware, parameter_count: int, replicas: int, gradient_bytes: float
) -> StepTime:
    """The ring all-reduce, then Adam on every GPU: its passes beyond the measured SGD's are
    compute (it cannot overlap the step it updates)."""
    return StepTime(
        gpu_update_extra_milliseconds(hardware, parameter_count),
        all_reduce_milliseconds(hardware, replicas, gradient_bytes),
        0.0,
    )


def mirror_weights_step(
    hardware: Hardware,
    parameter_count: int,
    replicas: int,
    gradient_bytes: float,
    delayed: bool,
    largest_fraction: float = 1.0,
) -> StepTime:
    """Working copies on the GPUs, master weights and Adam on the host. Zero compute.

    The GPUs all-reduce the gradients (NCCL, as MirroredStrategy; on GPUs it keeps the
    broadcast half the CPU run pruned); GPU 0 sends the one summed copy to the host over its own
    PCIe link (no other GPU copies then, so it has the link to itself), the host runs Adam, sends
    the new weights to GPU 0, which relays them to the N - 1 others over its NVLink: the measured
    `traffic("mirror_weights", N)`, 1 P each way through the host and N - 1 relayed copies.

    Args:
        hardware: Bandwidths and the host update's cost.
        parameter_count: Trainable parameters.
        replicas: GPUs.
        gradient_bytes: Bytes of one gradient copy.
        delayed: The host's part (copies, update, relay) runs beside the next step's compute.
        largest_fraction: The largest variable's share: the host's part (gradient to the host,
            update, new weights to GPU 0, relay) is a per-variable pipeline.

    Returns:
        The step's parts; with `delayed`, the host's part is `background_ms`.
    """
    moved = traffic(Placement.MIRROR_WEIGHTS, replicas)
    weight_bytes = parameter_count * FLOAT32_BYTES
    all_reduce_ms = all_reduce_milliseconds(hardware, replicas, gradient_bytes)
    relayed_copies = moved.between_replicas - (replicas - 1)
    to_host_ms = transfer_milliseconds(
        moved.to_host * gradient_bytes,
        pcie_gbps_per_gpu(hardware, 1, to_device=False, pinned=True),
    )
    from_host_ms = transfer_milliseconds(
        moved.from_host * weight_bytes,
        pcie_gbps_per_gpu(hardware, 1, to_device=True, pinned=True),
    )
    relay_ms = transfer_milliseconds(
        relayed_copies * weight_bytes, hardware.nvlink_gbps_per_direction
    )
    update_ms = host_update_milliseconds(hardware, parameter_count)
    chain = (to_host_ms, update_ms, from_host_ms, relay_ms)
    pipelined_ms = sum(chain) - pipelined_milliseconds(chain, largest_fraction)
    if delayed:
        return StepTime(0.0, all_reduce_ms, 0.0, background_ms=sum(chain) - pipelined_ms)
    return StepTime(
        0.0,
        all_reduce_ms + to_host_ms + from_host_ms + relay_ms,
        update_ms,
        pipelined_ms=pipelined_ms,
    )


def step_time(
    placement: StepPlacement | str,
    hardware: Hardware,
    parameter_count: int,
    replicas: int,
    compute_ms: float,
    gradient_bytes: float,
    largest_fraction: float = 1.0,
) -> StepTime:
    """The step of one placement.

    Args:
        placement: One of STEP_PLACEMENTS.
        hardware: Bandwidths.
        parameter_count: Trainable parameters; weights always move as float32.
        replicas: GPUs.
        compute_ms: One replica's compute.
        gradient_bytes: Bytes of one replica's gradients.
        largest_fraction: The largest variable's share of the parameters; 1.0 credits the
            host's per-variable pipeline with nothing.

    Returns:
        The step's parts.

    Raises:
        ValueError: For an unknown placement.
    """
    step_placement = find(StepPlacement, placement)
    if step_placement is None:
        raise ValueError(
            f"Unknown placement. Received: placement={placement!r}; expected one of "
            f"{tuple(map(str, STEP_PLACEMENTS))}."
        )
    parts = step_placement.parts
    if parts.host_optimizer is not None:
        hardware = dataclasses.replace(hardware, host_optimizer=parts.host_optimizer)
    if parts.placement == Placement.CPU:
        communication = cpu_hosted_step(
            hardware, parameter_count, replicas, gradient_bytes, parts.pinned, largest_fraction
        )
    elif parts.placement == Placement.MIRROR_WEIGHTS:
        communication = mirror_weights_step(
            hardware,
            parameter_count,
            replicas,
            gradient_bytes,
            parts.update_overlapped,
            largest_fraction,
        )
    elif parts.placement == Placement.GPU0:
        communication = gpu0_hosted_step(hardware, parameter_count, replicas, gradient_bytes)
    else:
        communication = mirrored_step(hardware, parameter_count, replicas, gradient_bytes)
    # A placement that updates on the GPUs returns that update as its compute.
    return dataclasses.replace(communication, compute_ms=compute_ms + communication.compute_ms)


def gradient_bytes_per_parameter(precision: str, bf16_gradient_dtype: str) -> int:
    """4, or 2 for bf16 runs whose gradients move as bfloat16.

    Keras mixed precision keeps float32 variables, so their gradients are float32 in bf16 runs
    too; "bfloat16" is a what-if for a strategy that would cast them.
    """
    if precision == "bf16" and bf16_gradient_dtype == "bfloat16":
        return BFLOAT16_BYTES
    return FLOAT32_BYTES


@dataclasses.dataclass(frozen=True)
class ScalingPoint:
    """One row of a step-time table.

    Attributes:
        placement: The row's placement.
        replicas: GPUs.
        step: The step's parts.
        samples_per_second: Global batch / serial step.
        speedup: Serial throughput / throughput of one GPU that holds its own weights (the
            measured step, with its SGD update).
        efficiency: speedup / replicas.
        overlapped_efficiency: The same with the overlapped step.
    """

    placement: StepPlacement
    replicas: int
    step: StepTime
    samples_per_second: float
    speedup: float
    efficiency: float
    overlapped_efficiency: float


def scaling_points(
    hardware: Hardware,
    model: ModelSpec,
    precision: str,
    scaling: Scaling,
    replica_counts: Sequence[int],
    bf16_gradient_dtype: str = "float32",
) -> list[ScalingPoint]:
    """Every placement at every GPU count.

    Args:
        hardware: Bandwidths.
        model: The reference model.
        precision: "fp32" or "bf16".
        scaling: Weak or strong scaling and its batch.
        replica_counts: GPU counts.
        bf16_gradient_dtype: "float32" or "bfloat16", see `gradient_bytes_per_parameter`.

    Returns:
        Rows by placement, then GPU count.
    """
    single_gpu_batch = scaling.global_batch(1)
    single_gpu_ms = replica_compute_milliseconds(model, precision, single_gpu_batch)
    single_gpu_throughput = single_gpu_batch / (single_gpu_ms * 1e-3)
    gradient_bytes = model.parameter_count * gradient_bytes_per_parameter(
        precision, bf16_gradient_dtype
    )
    points = []
    for placement in STEP_PLACEMENTS:
        for replicas in replica_counts:
            compute_ms = replica_compute_milliseconds(
                model, precision, scaling.per_replica_batch(replicas)
            )
            step = step_time(
                placement,
                hardware,
                model.parameter_count,
                replicas,
                compute_ms,
                gradient_bytes,
                model.largest_variable_fraction,
            )
            samples = scaling.global_batch(replicas)
            speedup = samples / (step.serial_ms * 1e-3) / single_gpu_throughput
            overlapped_speedup = samples / (step.overlapped_ms * 1e-3) / single_gpu_throughput
            points.append(
                ScalingPoint(
                    placement,
                    replicas,
                    step,
                    samples_per_second=samples / (step.serial_ms * 1e-3),
                    speedup=speedup,
                    efficiency=speedup / replicas,
                    overlapped_efficiency=overlapped_speedup / replicas,
                )
            )
    return points


def break_even_host_gbps(
    hardware: Hardware,
    model: ModelSpec,
    precision: str,
    batch: int,
    replicas: int,
    fraction: float,
) -> float:
    """Host memory bandwidth at which serial `mirror_weights` reaches `fraction` of Mirrored.

    Weak scaling at `batch` per GPU, the model's per-variable pipeline included. Only the host
    update depends on the host's bandwidth, and more bandwidth never slows a step: bisection.

    Returns:
        GB/s; infinity if the rest of the step alone is already too long.
    """
    compute_ms = replica_compute_milliseconds(model, precision, batch)
    gradient_bytes = model.parameter_count * FLOAT32_BYTES

    def serial_ms(placement, host_gbps):
        return step_time(
            placement,
            dataclasses.replace(hardware, host_gbps=host_gbps),
            model.parameter_count,
            replicas,
            compute_ms,
            gradient_bytes,
            model.largest_variable_fraction,
        ).serial_ms

    # Mirrored updates on the GPUs: its step does not depend on the host.
    allowed_ms = serial_ms(StepPlacement.MIRRORED, hardware.host_gbps) / fraction

    def reaches(host_gbps):
        return serial_ms(StepPlacement.MIRROR_WEIGHTS, host_gbps) <= allowed_ms

    low, high = 1e-3, 1e7
    if not reaches(high):
        return math.inf
    for _ in range(200):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high
