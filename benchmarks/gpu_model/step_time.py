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

from benchmarks.gpu_model.costs import (
    all_reduce_milliseconds,
    gpu_update_extra_milliseconds,
    host_sum_milliseconds,
    host_update_milliseconds,
    pcie_gbps_per_gpu,
    pipelined_milliseconds,
    traffic,
    transfer_milliseconds,
)
from benchmarks.gpu_model.hardware import BFLOAT16_BYTES, FLOAT32_BYTES, Hardware
from benchmarks.placements import Placement, StepPlacement, find

STEP_PLACEMENTS = tuple(StepPlacement)


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
