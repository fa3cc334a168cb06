"""GPU and host memory by where the weights live: weights, gradients and optimizer slots.

Activations are left out: they are the same under every placement.
"""

import dataclasses

from benchmarks.gpu_model.hardware import FLOAT32_BYTES
from benchmarks.placements import Placement, find

MEMORY_PLACEMENTS = tuple(Placement)  # pinned or pageable, delayed or not: the same bytes


@dataclasses.dataclass(frozen=True)
class MemoryFootprint:
    """Peak bytes of weights, gradients and slots on the busiest GPU, all GPUs, and the host."""

    busiest_gpu_bytes: float
    all_gpus_bytes: float
    host_bytes: float


def memory_footprint(
    placement: Placement | str, parameter_count: int, replicas: int, optimizer_slots: int
) -> MemoryFootprint:
    """Where the float32 weights, gradients and optimizer slots sit.

    A GPU that does not hold the weights keeps a copy of them for the step plus its gradients
    (with `mirror_weights` that copy is permanent, the same bytes).
    The holder keeps weights, slots, the N gradient copies (its own included) and, for N >= 2,
    the sum, all at once: an upper bound. bf16 runs add a 2-byte cast of the weights on every
    GPU in every placement, left out.

    Args:
        placement: A `Placement`.
        parameter_count: Trainable parameters.
        replicas: GPUs.
        optimizer_slots: Slot arrays per parameter (1 for momentum, 2 for Adam).

    Returns:
        The footprint.

    Raises:
        ValueError: For an unknown placement.
    """
    if find(Placement, placement) is None:
        raise ValueError(
            f"Unknown placement. Received: placement={placement!r}; expected one of "
            f"{tuple(map(str, MEMORY_PLACEMENTS))}."
        )
    replica_bytes = 2 * FLOAT32_BYTES * parameter_count
    gradient_copies = replicas + (1 if replicas >= 2 else 0)
    holder_bytes = FLOAT32_BYTES * parameter_count * (1 + optimizer_slots + gradient_copies)
    if placement == Placement.CPU:
        return MemoryFootprint(replica_bytes, replicas * replica_bytes, holder_bytes)
    if placement == Placement.MIRROR_WEIGHTS:
        # GPUs: the working copy and its gradients (reduced in place). Host: the master, the
        # slots and the one summed gradient it receives.
        host_bytes = FLOAT32_BYTES * parameter_count * (1 + optimizer_slots + 1)
        return MemoryFootprint(replica_bytes, replicas * replica_bytes, host_bytes)
    if placement == Placement.GPU0:
        return MemoryFootprint(holder_bytes, holder_bytes + (replicas - 1) * replica_bytes, 0.0)
    # Placement.MIRRORED: a copy of the weights and the slots on every GPU.
    per_gpu = replica_bytes + optimizer_slots * FLOAT32_BYTES * parameter_count
    return MemoryFootprint(per_gpu, replicas * per_gpu, 0.0)
