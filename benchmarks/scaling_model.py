"""Model of data-parallel step time and memory on N GPUs, by where the weights live.

No GPU is available where this project is built, so this predicts rather than measures. It
combines the figures measured on one H200 (GPU_FACTS.md, copied into `MODELS` and `Hardware`
below), the bytes this project measured crossing devices per step (benchmarks/traffic.py,
`MEASURED_TRAFFIC`), the host Adam update measured here (benchmarks/host_update.py) and a few
public hardware figures, each named beside its value, for these placements of the weights:

* CPU-hosted, `ReplicaStrategy()`: every step each GPU reads the float32 weights over PCIe and
  sends its gradients back; the host sums the N copies and runs the optimizer update. Pinned and
  pageable host memory are shown as two rows because they bound the PCIe bandwidth.
* `ReplicaStrategy(mirror_weights=True)`: a working copy on each GPU; the gradients are
  all-reduced among the GPUs (NCCL), one summed copy goes to the host, which runs the update once
  and sends the new weights to GPU 0, which relays them to the others. With the update
  overlapped with the next step (one step delayed, not built) as a second row.
* `/gpu:0`-hosted, `ReplicaStrategy(parameter_device="/gpu:0")`: the same flow over NVLink; GPU 0
  sends N - 1 weight copies, receives N - 1 gradient copies and sums them in HBM.
* Mirrored, `tf.distribute.MirroredStrategy`: a weight copy per GPU, NCCL ring all-reduce.

benchmarks/SCALING.md explains the model and holds the tables. Run from the repository root:

    python benchmarks/scaling_model.py                                  # print the tables
    python benchmarks/scaling_model.py --markdown_out=/tmp/scaling.md   # also write them
    python benchmarks/scaling_model.py --update_document=benchmarks/SCALING.md
    python benchmarks/scaling_model.py --plot_out=/tmp/scaling.png      # needs matplotlib
    python benchmarks/scaling_model.py --summary_chart_out=benchmarks/scaling_summary.png
"""

import dataclasses
import math
from collections.abc import Sequence

from absl import app, flags

# Units: milliseconds, bytes, and GB/s with 1 GB = 1e9 bytes.
BYTES_PER_GIGABYTE = 1e9
FLOAT32_BYTES = 4
BFLOAT16_BYTES = 2


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A reference model: its size and its measured single-GPU training step.

    Attributes:
        name: Display name.
        parameter_count: Trainable parameters.
        step_milliseconds: Precision -> ((per-GPU batch, milliseconds), ...) of forward + backward
            + SGD update on one H200 holding its own weights.
        largest_variable_fraction: The largest trainable variable's share of the parameters: it
            bounds how well the host's per-variable pipeline overlaps (`pipelined_milliseconds`).
    """

    name: str
    parameter_count: int
    step_milliseconds: dict[str, tuple[tuple[int, float], ...]]
    largest_variable_fraction: float = 1.0


MODELS = (
    # GPU_FACTS.md: "ResNet-50 (25.6M params) training step, batch 32 / 128: fp32 / bf16".
    # keras.applications.ResNet50: 2,359,296 of 25,583,592 trainable parameters in one 3x3 conv
    # (tests/benchmark_tools/scaling_model_test.py checks it).
    ModelSpec("ResNet-50", 25_600_000, {"fp32": ((32, 42.4), (128, 145.5)),
                                        "bf16": ((32, 19.3), (128, 55.3))}, 2_359_296 / 25_583_592),
    # GPU_FACTS.md: "ViT-B/16 (86.6M params) training step, batch 32 / 128: fp32 / bf16".
    # ViT-B/16's largest variables are its MLP kernels, 768 x 3072.
    ModelSpec("ViT-B/16", 86_600_000, {"fp32": ((32, 94.5), (128, 337.5)),
                                       "bf16": ((32, 23.4), (128, 58.1))}, 768 * 3072 / 86_600_000),
)  # fmt: skip
PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class Hardware:
    """Bandwidths of an 8-GPU H200 HGX server and its host. Each default names its source."""

    # GPU_FACTS.md: host<->device copies of 100 MB and 1 GB from pinned host memory.
    host_to_device_pinned_gbps: float = 51.0
    device_to_host_pinned_gbps: float = 51.0
    # GPU_FACTS.md: pageable copies, 17-19 GB/s to the device and 13-14 GB/s to the host; midpoints.
    host_to_device_pageable_gbps: float = 18.0
    device_to_host_pageable_gbps: float = 13.5
    # GPU_FACTS.md: "often two GPUs behind one PCIe switch sharing an uplink to the CPU".
    gpus_per_pcie_uplink: int = 2
    # GPU_FACTS.md: (N, ms) to sum N float32 copies of 25.6M parameters on the host (16 threads).
    host_sum_parameter_count: int = 25_600_000
    host_sum_milliseconds: tuple[tuple[int, float], ...] = ((2, 11.9), (4, 15.9), (8, 22.4))
    # The host's Adam update, in parameter-sized passes over host memory, so that it scales with
    # the host's bandwidth (`host_streaming_gbps`). TensorFlow's fused ResourceApplyAdam kernel
    # (tf_keras' Adam) streams 7: reads weights, gradients and both slots, writes weights and
    # slots. Keras 3's Adam is a chain of element-wise ops (about 30 passes by count); measured
    # by benchmarks/host_update.py at 3.05x FusedAdam's time (50M parameters, paired median of
    # 10, benchmarks/latest/results.md; 3.33x and 3.44x in earlier runs against the bare
    # kernel, which FusedAdam matches to 2%), so 7 x 3.05 = 21.35 passes. The default is
    # `replica_strategy.FusedAdam` (the fused kernel), which the docs recommend wherever the
    # update runs on the host; `--host_optimizer=keras` for Keras 3's Adam in every row.
    keras_adam_passes: float = 21.35
    fused_adam_passes: float = 7.0
    host_optimizer: str = "fused"
    # A host memory bandwidth to use instead of `host_streaming_gbps`'s (break-even searches).
    host_gbps: float | None = None
    # The measured GPU steps include an SGD update (5 passes: reads weights, gradients, momentum,
    # writes momentum and weights). Where the update runs on a GPU, Adam's extra passes are added
    # at HBM speed.
    measured_step_update_passes: int = 5
    # NVLink 4: 900 GB/s per GPU counting both directions (NVIDIA H200 datasheet), so 450 GB/s one
    # way; 380 GB/s one way measured GPU to GPU on HGX H100 with p2pBandwidthLatencyTest
    # (github.com/NVIDIA/nccl/issues/1264). HGX H200 uses the same NVLink 4 and NVSwitch.
    nvlink_gbps_per_direction: float = 380.0
    # HBM3e: 4.8 TB/s (NVIDIA H200 datasheet) at an assumed 80% for a streaming sum, the ratio
    # GPU_FACTS.md shows for PCIe (51 of 64 GB/s).
    gpu_memory_gbps: float = 0.8 * 4800.0
    # NVIDIA H200 datasheet: 141 GB of HBM3e.
    gpu_memory_gigabytes: float = 141.0


OPTIMIZER_SLOTS = {"SGD with momentum": 1, "Adam": 2}  # float32 arrays per parameter
STEP_PLACEMENTS = (
    "cpu_pinned", "cpu_pageable", "mirror_weights_keras_adam", "mirror_weights",
    "mirror_weights_delayed", "gpu0", "mirrored",
)  # fmt: skip
# pinned or pageable holds the same bytes; so does a delayed update
MEMORY_PLACEMENTS = ("cpu", "mirror_weights", "gpu0", "mirrored")
PLACEMENT_LABELS = {
    "cpu_pinned": "CPU-hosted, pinned",
    "cpu_pageable": "CPU-hosted, pageable",
    "cpu": "CPU-hosted",
    "mirror_weights_keras_adam": "`mirror_weights`, Keras 3 Adam",
    "mirror_weights": "`mirror_weights`",
    "mirror_weights_delayed": "`mirror_weights`, update overlapped",
    "gpu0": "`/gpu:0`-hosted",
    "mirrored": "Mirrored, all-reduce",
}


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


# benchmarks/traffic.py (`fit`, Adam, host /cpu:0, replicas /cpu:1 ... /cpu:N; the table in
# benchmarks/latest/results.md; mirror_weights at commit 8808e00 of its branch): bytes per step
# measured from the executed step. MirroredStrategy
# and mirror_weights reduce among the replicas with ReductionToOneDevice there: N - 1 gradients
# to replica 0; MirroredStrategy sends N - 1 sums back, mirror_weights sends N - 1 relayed
# weights instead (the all-reduce's broadcast half is pruned).
MEASURED_TRAFFIC = {
    "cpu": {2: Traffic(2.0, 2.0, 0.0), 4: Traffic(4.0, 4.0, 0.0)},
    "mirror_weights": {2: Traffic(1.0, 1.0, 2.0), 4: Traffic(1.0, 1.0, 6.0)},
    "mirrored": {2: Traffic(0.0, 0.0, 2.0), 4: Traffic(0.0, 0.0, 6.0)},
}


def traffic(placement: str, replicas: int) -> Traffic:
    """Bytes per step in multiples of P at any N: the rule `MEASURED_TRAFFIC` shows at N = 2, 4.

    CPU-hosted: each replica reads the weights and sends its gradient (N P each way).
    mirror_weights: one summed gradient to the host, one updated copy back, and 2 (N - 1) P among
    the replicas (the reduction's N - 1 and the relay's N - 1). Mirrored: 2 (N - 1) P among them.
    """
    base = placement
    for suffix in ("_delayed", "_keras_adam", "_pinned", "_pageable"):
        base = base.removesuffix(suffix)
    if base == "cpu":
        return Traffic(replicas, replicas, 0.0)
    if base == "mirror_weights":
        return Traffic(1.0, 1.0, 2.0 * (replicas - 1))
    if base == "mirrored":
        return Traffic(0.0, 0.0, 2.0 * (replicas - 1))
    raise ValueError(
        f"No measured traffic for placement={placement!r}; measured: {sorted(MEASURED_TRAFFIC)}."
    )


DEFAULT_PER_REPLICA_BATCHES = (32, 128)  # the measured batches
DEFAULT_GLOBAL_BATCH = 256  # 8 GPUs still get the measured 32 each
DEFAULT_REPLICA_COUNTS = (1, 2, 4, 8)
DOCUMENT_BEGIN_MARKER = (
    "<!-- BEGIN GENERATED by `python benchmarks/scaling_model.py "
    "--update_document=benchmarks/SCALING.md`: edit the script, not this block. -->"
)
DOCUMENT_END_MARKER = "<!-- END GENERATED -->"


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
    if hardware.host_optimizer == "keras":
        return hardware.keras_adam_passes
    if hardware.host_optimizer == "fused":
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
    moved = traffic("cpu", replicas)
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
    ring_bytes = traffic("mirrored", replicas).between_replicas / replicas * gradient_bytes
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
    moved = traffic("mirror_weights", replicas)
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
    placement: str,
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
    if placement in ("cpu_pinned", "cpu_pageable"):
        pinned = placement == "cpu_pinned"
        communication = cpu_hosted_step(
            hardware, parameter_count, replicas, gradient_bytes, pinned, largest_fraction
        )
    elif placement in ("mirror_weights", "mirror_weights_keras_adam", "mirror_weights_delayed"):
        if placement == "mirror_weights_keras_adam":
            hardware = dataclasses.replace(hardware, host_optimizer="keras")
        delayed = placement == "mirror_weights_delayed"
        communication = mirror_weights_step(
            hardware, parameter_count, replicas, gradient_bytes, delayed, largest_fraction
        )
    elif placement == "gpu0":
        communication = gpu0_hosted_step(hardware, parameter_count, replicas, gradient_bytes)
    elif placement == "mirrored":
        communication = mirrored_step(hardware, parameter_count, replicas, gradient_bytes)
    else:
        raise ValueError(
            f"Unknown placement. Received: placement={placement!r}; expected one of "
            f"{STEP_PLACEMENTS}."
        )
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
        placement: One of STEP_PLACEMENTS.
        replicas: GPUs.
        step: The step's parts.
        samples_per_second: Global batch / serial step.
        speedup: Serial throughput / throughput of one GPU that holds its own weights (the
            measured step, with its SGD update).
        efficiency: speedup / replicas.
        overlapped_efficiency: The same with the overlapped step.
    """

    placement: str
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


# Memory per placement: weights, gradients and optimizer slots; activations are left out.


@dataclasses.dataclass(frozen=True)
class MemoryFootprint:
    """Peak bytes of weights, gradients and slots on the busiest GPU, all GPUs, and the host."""

    busiest_gpu_bytes: float
    all_gpus_bytes: float
    host_bytes: float


def memory_footprint(
    placement: str, parameter_count: int, replicas: int, optimizer_slots: int
) -> MemoryFootprint:
    """Where the float32 weights, gradients and optimizer slots sit.

    A GPU that does not hold the weights keeps a copy of them for the step plus its gradients
    (with `mirror_weights` that copy is permanent, the same bytes).
    The holder keeps weights, slots, the N gradient copies (its own included) and, for N >= 2,
    the sum, all at once: an upper bound. bf16 runs add a 2-byte cast of the weights on every
    GPU in every placement, left out.

    Args:
        placement: One of MEMORY_PLACEMENTS.
        parameter_count: Trainable parameters.
        replicas: GPUs.
        optimizer_slots: Slot arrays per parameter (1 for momentum, 2 for Adam).

    Returns:
        The footprint.

    Raises:
        ValueError: For an unknown placement.
    """
    replica_bytes = 2 * FLOAT32_BYTES * parameter_count
    gradient_copies = replicas + (1 if replicas >= 2 else 0)
    holder_bytes = FLOAT32_BYTES * parameter_count * (1 + optimizer_slots + gradient_copies)
    if placement == "cpu":
        return MemoryFootprint(replica_bytes, replicas * replica_bytes, holder_bytes)
    if placement == "mirror_weights":
        # GPUs: the working copy and its gradients (reduced in place). Host: the master, the
        # slots and the one summed gradient it receives.
        host_bytes = FLOAT32_BYTES * parameter_count * (1 + optimizer_slots + 1)
        return MemoryFootprint(replica_bytes, replicas * replica_bytes, host_bytes)
    if placement == "gpu0":
        return MemoryFootprint(holder_bytes, holder_bytes + (replicas - 1) * replica_bytes, 0.0)
    if placement == "mirrored":
        per_gpu = replica_bytes + optimizer_slots * FLOAT32_BYTES * parameter_count
        return MemoryFootprint(per_gpu, replicas * per_gpu, 0.0)
    raise ValueError(
        f"Unknown placement. Received: placement={placement!r}; expected one of "
        f"{MEMORY_PLACEMENTS}."
    )


# Markdown.


@dataclasses.dataclass(frozen=True)
class MixedDevice:
    """One GPU of a mixed pair: public peak figures and a published training throughput.

    Only `resnet50_images_per_second` and `pcie_gbps_per_direction` enter the model; the peaks
    say how far apart the two generations are on paper. Sources: benchmarks/SCALING.md, "A
    mixed pair".

    Attributes:
        name: Display name.
        fp32_tflops: Peak FP32 (non-tensor) TFLOPS, NVIDIA datasheet.
        tf32_tflops: Peak TF32 tensor TFLOPS (dense), NVIDIA datasheet; None: no TF32 (Volta).
        fp16_tensor_tflops: Peak FP16 tensor TFLOPS (dense), NVIDIA datasheet.
        pcie_gbps_per_direction: Nominal PCIe x16 bandwidth one way, GB/s.
        resnet50_images_per_second: Published single-GPU ResNet-50 v1.5 training throughput.
        resnet50_batch: The per-GPU batch it was measured at.
        resnet50_math: The math it was measured with ("TF32" on an A100 runs fp32 models).
    """

    name: str
    fp32_tflops: float
    tf32_tflops: float | None
    fp16_tensor_tflops: float
    pcie_gbps_per_direction: float
    resnet50_images_per_second: float
    resnet50_batch: int
    resnet50_math: str

    @property
    def milliseconds_per_row(self) -> float:
        return 1e3 / self.resnet50_images_per_second


# NVIDIA DeepLearningExamples, TensorFlow/Classification/ConvNets/resnet50v1.5/README.md,
# "Training performance results" (TensorFlow 20.06-tf1-py3 NGC container, 1 GPU, + XLA): DGX A100
# (A100 40GB) 909 img/s at 256 per GPU in TF32; DGX-1 (V100 16GB) 412 img/s at 128 per GPU in
# FP32. Peaks: NVIDIA A100 and V100 (SXM) datasheets. PCIe one way: Gen4 x16 and Gen3 x16 at
# 16 and 8 GT/s per lane with 128b/130b encoding (the PCIe specifications), nominal.
MIXED_PAIR = (
    MixedDevice("A100 (SXM4, 40 GB)", 19.5, 156.0, 312.0, 31.5, 909.0, 256, "TF32 + XLA"),
    MixedDevice("V100 (SXM2, 16 GB)", 15.7, None, 125.0, 15.75, 412.0, 128, "FP32 + XLA"),
)
MIXED_PAIR_GLOBAL_BATCH = 256
# Of a link's nominal bandwidth, what copies reach: GPU_FACTS.md measured 51 of 64 GB/s on PCIe
# Gen5 x16 (Hardware.host_to_device_pinned_gbps); assumed the same on the older links.
PCIE_REACHABLE_FRACTION = 51.0 / 64.0
RESNET50_PARAMETERS = 25_600_000


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


def mixed_pair_markdown(
    batch: int = MIXED_PAIR_GLOBAL_BATCH, devices: Sequence[MixedDevice] = MIXED_PAIR
) -> str:
    """The per-device figures and the step table of the mixed pair."""
    figures = markdown_table(
        [
            "GPU",
            "FP32 peak, TFLOPS",
            "TF32 tensor peak, TFLOPS",
            "FP16 tensor peak, TFLOPS",
            "PCIe one way, nominal GB/s",
            "ResNet-50 training, img/s (batch, math)",
            "ms per row",
        ],
        [
            [
                device.name,
                f"{device.fp32_tflops:g}",
                f"{device.tf32_tflops:g}" if device.tf32_tflops else "none",
                f"{device.fp16_tensor_tflops:g}",
                f"{device.pcie_gbps_per_direction:g}",
                f"{device.resnet50_images_per_second:,.0f} ({device.resnet50_batch}, "
                f"{device.resnet50_math})",
                f"{device.milliseconds_per_row:.3f}",
            ]
            for device in devices
        ],
    )
    steps = mixed_pair_steps(batch, devices)
    even = next(point for point in steps if "even" in point.label)
    table = markdown_table(
        [
            "ResNet-50 fp32, global batch " + str(batch),
            "rows per GPU (" + " / ".join(device.name.split()[0] for device in devices) + ")",
            "compute, slowest GPU (ms)",
            "all-reduce (ms)",
            "img/s, no overlap",
            "img/s, full overlap",
            "/ even split, no overlap",
        ],
        [
            [
                point.label,
                " / ".join(str(rows) for rows in point.rows),
                f"{point.compute_milliseconds:.1f}",
                f"{point.all_reduce_milliseconds:.1f}",
                f"{point.serial_images_per_second:,.0f}",
                f"{point.overlapped_images_per_second:,.0f}",
                f"{point.serial_images_per_second / even.serial_images_per_second:.2f}",
            ]
            for point in steps
        ],
    )
    return figures + "\n\n" + table


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table from column titles and already formatted cells, no trailing newline."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def percent(fraction: float) -> str:
    return f"{100 * fraction:.0f}%"


def step_table_heading(model: ModelSpec, precision: str, scaling: Scaling) -> str:
    """The heading above one step-time table."""
    return f"#### {model.name}, {precision}, {scaling.title}"


def derived_figures_markdown(hardware: Hardware, most_replicas: int) -> str:
    """The bandwidths the model uses that are derived rather than copied from the inputs."""
    rows = [
        ("Host streaming bandwidth (slope of the host sums)", host_streaming_gbps(hardware)),
        (
            f"Host bandwidth for `mirror_weights` at 90% of Mirrored, ResNet-50 fp32, 128 per "
            f"GPU, {most_replicas} GPUs, serial, Keras 3 Adam",
            break_even_host_gbps(
                dataclasses.replace(hardware, host_optimizer="keras"),
                MODELS[0],
                "fp32",
                128,
                most_replicas,
                0.9,
            ),
        ),
        (
            "... the same with a fused Adam kernel on the host",
            break_even_host_gbps(
                dataclasses.replace(hardware, host_optimizer="fused"),
                MODELS[0],
                "fp32",
                128,
                most_replicas,
                0.9,
            ),
        ),
        (
            f"PCIe per GPU, pinned, either way, {most_replicas} GPUs copying",
            pcie_gbps_per_gpu(hardware, most_replicas, to_device=True, pinned=True),
        ),
        (
            f"PCIe per GPU, pageable, to the GPU, {most_replicas} GPUs copying",
            pcie_gbps_per_gpu(hardware, most_replicas, to_device=True, pinned=False),
        ),
        (
            f"PCIe per GPU, pageable, to the host, {most_replicas} GPUs copying",
            pcie_gbps_per_gpu(hardware, most_replicas, to_device=False, pinned=False),
        ),
    ]
    return markdown_table(["Derived figure", "GB/s"], [(name, f"{v:.1f}") for name, v in rows])


def summary_markdown(
    hardware: Hardware, scalings: Sequence[Scaling], most_replicas: int, bf16_gradient_dtype: str
) -> str:
    """Scaling efficiency at the largest GPU count, serial / overlapped, for every case."""
    rows = []
    for scaling in scalings:
        for model in MODELS:
            for precision in PRECISIONS:
                points = scaling_points(
                    hardware, model, precision, scaling, [most_replicas], bf16_gradient_dtype
                )
                cells = [
                    f"{percent(point.efficiency)} / {percent(point.overlapped_efficiency)}"
                    for point in points
                ]
                by_placement = {point.placement: point for point in points}
                cells.append(
                    percent(
                        by_placement["mirror_weights"].samples_per_second
                        / by_placement["mirrored"].samples_per_second
                    )
                )
                rows.append([model.name, precision, scaling.title, *cells])
    headers = [
        "Model", "Precision", "Batch", *(PLACEMENT_LABELS[p] for p in STEP_PLACEMENTS),
        "`mirror_weights` / Mirrored throughput, serial",
    ]  # fmt: skip
    return markdown_table(headers, rows)


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
    allowed_ms = serial_ms("mirrored", hardware.host_gbps) / fraction

    def reaches(host_gbps):
        return serial_ms("mirror_weights", host_gbps) <= allowed_ms

    low, high = 1e-3, 1e7
    if not reaches(high):
        return math.inf
    for _ in range(200):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high


def overhead_markdown(hardware: Hardware, replicas: int) -> str:
    """Per-step time each placement adds to compute, per billion float32 parameters.

    Every part scales with the parameter count, so this turns into a rule by model size: a
    placement keeps a fraction f of the compute-bound throughput when the compute step is at
    least f / (1 - f) times its overhead (9x for 90%).
    """
    parameter_count = 1_000_000_000
    gradient_bytes = parameter_count * FLOAT32_BYTES
    rows = []
    for placement in STEP_PLACEMENTS:
        step = step_time(placement, hardware, parameter_count, replicas, 0.0, gradient_bytes)
        rows.append(
            (
                PLACEMENT_LABELS[placement],
                f"{step.transfer_ms:,.0f}",
                f"{step.reduce_ms:,.0f}",
                f"{step.background_ms:,.0f}",
                f"{step.compute_ms + step.communication_ms:,.0f}",
            )
        )
    headers = [
        "Placement", "transfers ms", "sum + update ms", "beside the next step ms",
        "added to the step, serial, ms (with Adam on the GPUs)",
    ]  # fmt: skip
    return markdown_table(headers, rows)


def step_markdown(points: Sequence[ScalingPoint]) -> str:
    """A step-time table: one row per placement and GPU count."""
    headers = [
        "Placement", "GPUs", "compute ms", "transfers ms", "sum + update ms",
        "hidden by the host's pipeline ms", "beside the next step ms", "step ms serial", "step ms overlapped", "samples/s serial", "speedup serial", "efficiency serial",
        "efficiency overlapped",
    ]  # fmt: skip
    rows = [
        (
            PLACEMENT_LABELS[point.placement],
            str(point.replicas),
            f"{point.step.compute_ms:.1f}",
            f"{point.step.transfer_ms:.1f}",
            f"{point.step.reduce_ms:.1f}",
            f"{point.step.pipelined_ms:.1f}",
            f"{point.step.background_ms:.1f}",
            f"{point.step.serial_ms:.1f}",
            f"{point.step.overlapped_ms:.1f}",
            f"{point.samples_per_second:,.0f}",
            f"{point.speedup:.2f}",
            percent(point.efficiency),
            percent(point.overlapped_efficiency),
        )
        for point in points
    ]
    return markdown_table(headers, rows)


def memory_markdown(hardware: Hardware, replica_counts: Sequence[int]) -> str:
    """Bytes per parameter on the busiest GPU, then gigabytes per model."""
    per_parameter_headers = ["Placement", "GPUs"]
    for optimizer in OPTIMIZER_SLOTS:
        per_parameter_headers += [
            f"bytes/param, {optimizer}",
            f"billion params in {hardware.gpu_memory_gigabytes:.0f} GB, {optimizer}",
        ]
    per_parameter_rows = []
    for placement in MEMORY_PLACEMENTS:
        for replicas in replica_counts:
            cells = [PLACEMENT_LABELS[placement], str(replicas)]
            for slots in OPTIMIZER_SLOTS.values():
                busiest = memory_footprint(placement, 1, replicas, slots).busiest_gpu_bytes
                cells += [f"{busiest:.0f}", f"{hardware.gpu_memory_gigabytes / busiest:.1f}"]
            per_parameter_rows.append(cells)
    gigabyte_headers = [
        "Model", "Placement", "GPUs", "busiest GPU GB, momentum", "busiest GPU GB, Adam",
        "all GPUs GB, Adam", "host GB, Adam",
    ]  # fmt: skip
    gigabyte_rows = []
    for model in MODELS:
        for placement in MEMORY_PLACEMENTS:
            for replicas in replica_counts:
                momentum, adam = (
                    memory_footprint(placement, model.parameter_count, replicas, slots)
                    for slots in OPTIMIZER_SLOTS.values()
                )
                gigabytes = (
                    momentum.busiest_gpu_bytes, adam.busiest_gpu_bytes, adam.all_gpus_bytes,
                    adam.host_bytes,
                )  # fmt: skip
                gigabyte_rows.append(
                    [model.name, PLACEMENT_LABELS[placement], str(replicas)]
                    + [f"{value / BYTES_PER_GIGABYTE:.2f}" for value in gigabytes]
                )
    return (
        markdown_table(per_parameter_headers, per_parameter_rows)
        + "\n\n"
        + markdown_table(gigabyte_headers, gigabyte_rows)
    )


def build_markdown(
    hardware: Hardware,
    scalings: Sequence[Scaling],
    replica_counts: Sequence[int],
    bf16_gradient_dtype: str = "float32",
) -> str:
    """All generated tables, as printed and as pasted into SCALING.md.

    Args:
        hardware: Bandwidths.
        scalings: Batch regimes.
        replica_counts: GPU counts, ascending.
        bf16_gradient_dtype: "float32" or "bfloat16", see `gradient_bytes_per_parameter`.

    Returns:
        Markdown text ending with a newline.
    """
    most = max(replica_counts)
    sections = [
        "### Derived figures\n\n" + derived_figures_markdown(hardware, most),
        f"### Scaling efficiency at {most} GPUs (serial / overlapped)\n\n"
        + summary_markdown(hardware, scalings, most, bf16_gradient_dtype),
        f"### Time added per step per billion float32 parameters, {most} GPUs\n\n"
        + overhead_markdown(hardware, most),
        "### Step time, throughput and efficiency",
    ]
    for scaling in scalings:
        for model in MODELS:
            for precision in PRECISIONS:
                points = scaling_points(
                    hardware, model, precision, scaling, replica_counts, bf16_gradient_dtype
                )
                heading = step_table_heading(model, precision, scaling)
                sections.append(heading + "\n\n" + step_markdown(points))
    sections.append(
        "### Memory: weights, gradients and optimizer slots (activations excluded)\n\n"
        + memory_markdown(hardware, replica_counts)
    )
    sections.append(
        "### A mixed pair: one A100 and one V100, split evenly or by speed\n\n"
        + mixed_pair_markdown()
    )
    return "\n\n".join(sections) + "\n"


def replace_generated_block(document: str, generated: str) -> str:
    """Puts `generated` between the document's generated-block markers.

    Args:
        document: Text holding DOCUMENT_BEGIN_MARKER and, after it, DOCUMENT_END_MARKER.
        generated: The new block.

    Returns:
        The updated document.

    Raises:
        ValueError: If the markers are missing.
    """
    begin = document.find(DOCUMENT_BEGIN_MARKER)
    end = document.find(DOCUMENT_END_MARKER, max(begin, 0))
    if begin < 0 or end < 0:
        raise ValueError(
            f"No generated block: expected a line {DOCUMENT_BEGIN_MARKER!r} and, after it, a "
            f"line {DOCUMENT_END_MARKER!r}. Add both where the tables belong."
        )
    head = document[: begin + len(DOCUMENT_BEGIN_MARKER)]
    return head + "\n\n" + generated + "\n" + document[end:]


def plot_efficiency(
    hardware: Hardware,
    scaling: Scaling,
    replica_counts: Sequence[int],
    bf16_gradient_dtype: str,
    path: str,
) -> None:
    """Saves serial efficiency against GPU count, a panel per model and precision.

    Args:
        hardware: Bandwidths.
        scaling: The batch regime to plot.
        replica_counts: GPU counts.
        bf16_gradient_dtype: "float32" or "bfloat16".
        path: Image file to write.

    Raises:
        app.UsageError: If matplotlib is not installed.
    """
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(len(MODELS), len(PRECISIONS), figsize=(10, 7), squeeze=False)
    for axis_row, model in zip(axes, MODELS, strict=True):
        for axis, precision in zip(axis_row, PRECISIONS, strict=True):
            points = scaling_points(
                hardware, model, precision, scaling, replica_counts, bf16_gradient_dtype
            )
            for placement in STEP_PLACEMENTS:
                mine = [point for point in points if point.placement == placement]
                axis.plot(
                    [point.replicas for point in mine],
                    [point.efficiency for point in mine],
                    marker="o",
                    label=PLACEMENT_LABELS[placement].replace("`", ""),
                )
            axis.set(title=f"{model.name}, {precision}", xlabel="GPUs", ylim=(0, 1.05))
            axis.set_ylabel("efficiency, serial")
            axis.grid(True)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(scaling.title)
    figure.tight_layout()
    figure.savefig(path)


# The colours of benchmarks/plots.py: ReplicaStrategy blue, mirror_weights green, Mirrored orange.
PLACEMENT_COLOURS = {
    "cpu_pinned": "#1f77b4",
    "cpu_pageable": "#aec7e8",
    "mirror_weights_keras_adam": "#bcbd22",
    "mirror_weights": "#2ca02c",
    "mirror_weights_delayed": "#98df8a",
    "gpu0": "#17becf",
    "mirrored": "#ff7f0e",
}


def plot_summary(
    hardware: Hardware,
    scalings: Sequence[Scaling],
    most_replicas: int,
    bf16_gradient_dtype: str,
    path: str,
) -> None:
    """Saves the summary table as bars: efficiency at `most_replicas` GPUs by placement.

    A panel per batch regime, a group of bars per model and precision: the bar is the serial
    efficiency, the black tick above it the overlapped one.

    Raises:
        app.UsageError: If matplotlib is not installed.
    """
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(
        1, len(scalings), figsize=(5.2 * len(scalings), 5.2), squeeze=False, sharey=True
    )
    width = 0.8 / len(STEP_PLACEMENTS)
    for axis, scaling in zip(axes[0], scalings, strict=True):
        cases = [(model, precision) for model in MODELS for precision in PRECISIONS]
        for case_index, (model, precision) in enumerate(cases):
            points = scaling_points(
                hardware, model, precision, scaling, [most_replicas], bf16_gradient_dtype
            )
            for index, point in enumerate(points):
                x = case_index - 0.4 + (index + 0.5) * width
                axis.bar(
                    x,
                    100 * point.efficiency,
                    width,
                    color=PLACEMENT_COLOURS[point.placement],
                    label=PLACEMENT_LABELS[point.placement].replace("`", "") + " (bar: serial)",
                )
                axis.plot(
                    [x - width / 2, x + width / 2],
                    [100 * point.overlapped_efficiency] * 2,
                    color="black",
                    linewidth=1,
                    label="full overlap (tick)",
                )
        axis.set_xticks(range(len(cases)))
        axis.set_xticklabels([f"{model.name}\n{precision}" for model, precision in cases])
        axis.set_title(scaling.title, fontsize="medium")
        axis.set_ylim(0, 105)
        axis.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"scaling efficiency at {most_replicas} GPUs, %")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(
        unique.values(), unique.keys(), loc="lower center", ncol=4, fontsize="small", frameon=False
    )
    figure.suptitle(
        f"Predicted efficiency at {most_replicas} H200 GPUs by weight placement "
        f"(benchmarks/scaling_model.py; host Adam: {hardware.host_optimizer})",
        fontsize="medium",
    )
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def _pyplot():
    """matplotlib's pyplot on the file-only backend; app.UsageError if it is missing."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as error:
        raise app.UsageError(
            "Plots need matplotlib: `pip install matplotlib`, or leave the plot flags unset."
        ) from error
    return pyplot


_PER_REPLICA_BATCH = flags.DEFINE_multi_integer(
    "per_replica_batch",
    list(DEFAULT_PER_REPLICA_BATCHES),
    "Per-GPU batch of a weak-scaling table; repeat for several. 32 and 128 were measured, other "
    "batches are interpolated linearly.",
)
_GLOBAL_BATCH = flags.DEFINE_integer(
    "global_batch",
    DEFAULT_GLOBAL_BATCH,
    "Global batch of the strong-scaling tables; 0 leaves them out.",
)
_GPU_COUNTS = flags.DEFINE_multi_integer(
    "gpu_counts", list(DEFAULT_REPLICA_COUNTS), "GPU counts; repeat for several."
)
_GPUS_PER_PCIE_UPLINK = flags.DEFINE_integer(
    "gpus_per_pcie_uplink",
    Hardware.gpus_per_pcie_uplink,
    "GPUs sharing one PCIe switch uplink to the CPU; 1 gives each GPU its own.",
)
_BF16_GRADIENT_DTYPE = flags.DEFINE_enum(
    "bf16_gradient_dtype",
    "float32",
    ["float32", "bfloat16"],
    "Dtype of the gradients on the links in bf16 runs (Keras mixed precision: float32).",
)
_HOST_OPTIMIZER = flags.DEFINE_enum(
    "host_optimizer",
    Hardware.host_optimizer,
    ["keras", "fused"],
    "The host's Adam: Keras 3's element-wise chain (measured) or the fused ResourceApplyAdam "
    "kernel (measured, what tf_keras runs).",
)
_MARKDOWN_OUT = flags.DEFINE_string("markdown_out", None, "Also write the tables to this file.")
_UPDATE_DOCUMENT = flags.DEFINE_string(
    "update_document", None, "Replace the generated block of this Markdown file with the tables."
)
_SUMMARY_CHART_OUT = flags.DEFINE_string(
    "summary_chart_out",
    None,
    "Save the summary (efficiency at the most GPUs by placement) as a bar chart, e.g. "
    "benchmarks/scaling_summary.png (needs matplotlib).",
)
_PLOT_OUT = flags.DEFINE_string(
    "plot_out", None, "Save an efficiency plot of the first batch regime (needs matplotlib)."
)


def scalings_from_flags() -> list[Scaling]:
    """The batch regimes the flags ask for; raises app.UsageError for batches below 1."""
    if min(_PER_REPLICA_BATCH.value) < 1 or _GLOBAL_BATCH.value < 0:
        raise app.UsageError(
            "--per_replica_batch must be >= 1 and --global_batch >= 0. Received: "
            f"per_replica_batch={_PER_REPLICA_BATCH.value}, global_batch={_GLOBAL_BATCH.value}."
        )
    scalings = [Scaling("weak", batch) for batch in _PER_REPLICA_BATCH.value]
    if _GLOBAL_BATCH.value:
        scalings.append(Scaling("strong", _GLOBAL_BATCH.value))
    return scalings


def update_document(path: str, markdown: str) -> None:
    """Rewrites the generated block of the Markdown file at `path`."""
    with open(path, encoding="utf-8") as file:
        document = file.read()
    try:
        updated = replace_generated_block(document, markdown)
    except ValueError as error:
        raise app.UsageError(f"--update_document={path}: {error}") from error
    with open(path, "w", encoding="utf-8") as file:
        file.write(updated)


def main(argv: Sequence[str]) -> None:
    del argv  # Unused.
    if min(_GPU_COUNTS.value) < 1 or _GPUS_PER_PCIE_UPLINK.value < 1:
        raise app.UsageError(
            "--gpu_counts and --gpus_per_pcie_uplink must be >= 1. Received: "
            f"gpu_counts={_GPU_COUNTS.value}, gpus_per_pcie_uplink={_GPUS_PER_PCIE_UPLINK.value}."
        )
    hardware = Hardware(
        gpus_per_pcie_uplink=_GPUS_PER_PCIE_UPLINK.value, host_optimizer=_HOST_OPTIMIZER.value
    )
    scalings = scalings_from_flags()
    replica_counts = sorted(set(_GPU_COUNTS.value))
    markdown = build_markdown(hardware, scalings, replica_counts, _BF16_GRADIENT_DTYPE.value)
    print(markdown)
    if _MARKDOWN_OUT.value:
        with open(_MARKDOWN_OUT.value, "w", encoding="utf-8") as file:
            file.write(markdown)
    if _UPDATE_DOCUMENT.value:
        update_document(_UPDATE_DOCUMENT.value, markdown)
    if _SUMMARY_CHART_OUT.value:
        plot_summary(
            hardware,
            scalings,
            max(replica_counts),
            _BF16_GRADIENT_DTYPE.value,
            _SUMMARY_CHART_OUT.value,
        )
    if _PLOT_OUT.value:
        plot_efficiency(
            hardware, scalings[0], replica_counts, _BF16_GRADIENT_DTYPE.value, _PLOT_OUT.value
        )


if __name__ == "__main__":
    app.run(main)
