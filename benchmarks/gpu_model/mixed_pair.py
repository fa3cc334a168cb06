"""A mixed pair of GPUs (one A100, one V100): step time split evenly or by speed.

Each device's compute is rows x its published time per row; the pair's gradients are all-reduced
over PCIe. The facts are `hardware.MIXED_PAIR`.
"""

import dataclasses
import math
from collections.abc import Sequence

from benchmarks.gpu_model.costs import transfer_milliseconds
from benchmarks.gpu_model.hardware import (
    FLOAT32_BYTES,
    MIXED_PAIR,
    PCIE_REACHABLE_FRACTION,
    RESNET50_PARAMETERS,
    MixedDevice,
)

MIXED_PAIR_GLOBAL_BATCH = 256


def split_rows(batch: int, weights: Sequence[float]) -> list[int]:
    """Rows per device in proportion to `weights`, summing to `batch`, each within one row of
    its share: largest remainder, ties to the lower index (ReplicaStrategy's split rule)."""
    total = sum(weights)
    shares = [batch * weight / total for weight in weights]
    rows = [math.floor(share) for share in shares]
    by_remainder = sorted(
        range(len(weights)), key=lambda index: (rows[index] - shares[index], index)
    )
    for index in by_remainder[: batch - sum(rows)]:
        rows[index] += 1
    return rows


@dataclasses.dataclass(frozen=True)
class MixedPairStep:
    """One configuration of the mixed pair (or one of its GPUs alone), ResNet-50 fp32.

    Attributes:
        label: What runs.
        rows: Rows per device, in `MIXED_PAIR` order (0 for a device not used).
        compute_milliseconds: The slowest device's compute: the step waits for it.
        all_reduce_milliseconds: The gradients' all-reduce between the two GPUs (0 alone).
    """

    label: str
    rows: tuple[int, ...]
    compute_milliseconds: float
    all_reduce_milliseconds: float

    @property
    def serial_images_per_second(self) -> float:
        """Throughput with the all-reduce after the compute (no overlap)."""
        step = self.compute_milliseconds + self.all_reduce_milliseconds
        return 1e3 * sum(self.rows) / step

    @property
    def overlapped_images_per_second(self) -> float:
        """Throughput with the all-reduce hidden behind the compute (full overlap)."""
        step = max(self.compute_milliseconds, self.all_reduce_milliseconds)
        return 1e3 * sum(self.rows) / step


def mixed_pair_all_reduce_milliseconds(devices: Sequence[MixedDevice] = MIXED_PAIR) -> float:
    """A two-GPU ring all-reduce of ResNet-50's float32 gradients over PCIe (no NVLink joins
    two generations): each GPU sends and receives 2 (N - 1) / N = 1 copy, at the slower link's
    reachable bandwidth. The split does not change it: the gradients have the weights' size."""
    gradient_bytes = FLOAT32_BYTES * RESNET50_PARAMETERS
    slowest = min(device.pcie_gbps_per_direction for device in devices)
    return transfer_milliseconds(gradient_bytes, PCIE_REACHABLE_FRACTION * slowest)


def mixed_pair_steps(
    batch: int = MIXED_PAIR_GLOBAL_BATCH, devices: Sequence[MixedDevice] = MIXED_PAIR
) -> list[MixedPairStep]:
    """Each GPU alone, the pair split evenly (every synchronous strategy's split), and the pair
    split by speed (`ReplicaStrategy(split=[909, 412])`, or what `split="auto"` settles at).

    Each device's compute is rows x its published time per row (throughput taken as flat in
    the batch near the published batch).
    """
    all_reduce = mixed_pair_all_reduce_milliseconds(devices)

    def step(label, rows, all_reduce_milliseconds):
        compute = max(
            count * device.milliseconds_per_row for count, device in zip(rows, devices, strict=True)
        )
        return MixedPairStep(label, tuple(rows), compute, all_reduce_milliseconds)

    alone = [
        step(f"{device.name} alone", [batch if other is device else 0 for other in devices], 0.0)
        for device in devices
    ]
    even = split_rows(batch, [1.0] * len(devices))
    by_speed = split_rows(batch, [device.resnet50_images_per_second for device in devices])
    return alone + [
        step('pair, `split="even"` (as MirroredStrategy)', even, all_reduce),
        step('pair, split by speed (`split=[909, 412]` or `"auto"`)', by_speed, all_reduce),
    ]
