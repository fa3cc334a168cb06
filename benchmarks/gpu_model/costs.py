"""What moving, summing and updating bytes costs: the links, the host, and the traffic rule.

Each function turns bytes into milliseconds with the bandwidths of `hardware.Hardware`, or, for
`traffic`, a placement and a GPU count into bytes per step.
"""

import dataclasses
from collections.abc import Sequence

from benchmarks.gpu_model.hardware import BYTES_PER_GIGABYTE, FLOAT32_BYTES, Hardware
from benchmarks.placements import HostOptimizer, Placement, StepPlacement, placement_of


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


def all_reduce_milliseconds(hardware: Hardware, replicas: int, gradient_bytes: float) -> float:
    """An NCCL ring: each GPU's link carries 1/N of the measured 2 (N - 1) P, at NVLink speed.

    Its adds run on arrival and count as free.
    """
    ring_bytes = traffic(Placement.MIRRORED, replicas).between_replicas / replicas * gradient_bytes
    return transfer_milliseconds(ring_bytes, hardware.nvlink_gbps_per_direction)
