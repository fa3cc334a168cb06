"""Scaling over GPU counts: every placement's step, throughput and efficiency per case.

A case is a reference model, a precision and a batch regime (`Scaling`: weak or strong).
"""

import dataclasses
import math
from collections.abc import Sequence

from benchmarks.gpu_model.costs import piecewise_linear
from benchmarks.gpu_model.hardware import FLOAT32_BYTES, Hardware, ModelSpec
from benchmarks.gpu_model.step_time import (
    STEP_PLACEMENTS,
    StepTime,
    gradient_bytes_per_parameter,
    step_time,
)
from benchmarks.placements import StepPlacement

DEFAULT_PER_REPLICA_BATCHES = (32, 128)  # the measured batches
DEFAULT_GLOBAL_BATCH = 256  # 8 GPUs still get the measured 32 each
DEFAULT_REPLICA_COUNTS = (1, 2, 4, 8)


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
