"""The GPU model's hardware facts: reference models, bandwidths, and a mixed pair of GPUs.

Every value names its source beside it; the sources are in SOURCES.md, next to this file.
Units: milliseconds, bytes, and GB/s with 1 GB = 1e9 bytes.
"""

import dataclasses

from benchmarks.placements import HostOptimizer

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
            bounds how well the host's per-variable pipeline overlaps
            (`costs.pipelined_milliseconds`).
    """

    name: str
    parameter_count: int
    step_milliseconds: dict[str, tuple[tuple[int, float], ...]]
    largest_variable_fraction: float = 1.0


MODELS = (
    # SOURCES.md, H200: "ResNet-50 (25.6M params) training step, batch 32 / 128: fp32 / bf16".
    # keras.applications.ResNet50: 2,359,296 of 25,583,592 trainable parameters in one 3x3 conv
    # (tests/benchmark_tools/scaling_model_test.py checks it).
    ModelSpec("ResNet-50", 25_600_000, {"fp32": ((32, 42.4), (128, 145.5)),
                                        "bf16": ((32, 19.3), (128, 55.3))}, 2_359_296 / 25_583_592),
    # SOURCES.md, H200: "ViT-B/16 (86.6M params) training step, batch 32 / 128: fp32 / bf16".
    # ViT-B/16's largest variables are its MLP kernels, 768 x 3072.
    ModelSpec("ViT-B/16", 86_600_000, {"fp32": ((32, 94.5), (128, 337.5)),
                                       "bf16": ((32, 23.4), (128, 58.1))}, 768 * 3072 / 86_600_000),
)  # fmt: skip
PRECISIONS = ("fp32", "bf16")
OPTIMIZER_SLOTS = {"SGD with momentum": 1, "Adam": 2}  # float32 arrays per parameter


@dataclasses.dataclass(frozen=True)
class Hardware:
    """Bandwidths of an 8-GPU H200 HGX server and its host. Each default names its source."""

    # SOURCES.md, H200: host<->device copies of 100 MB and 1 GB from pinned host memory.
    host_to_device_pinned_gbps: float = 51.0
    device_to_host_pinned_gbps: float = 51.0
    # SOURCES.md, H200: pageable copies, 17-19 GB/s to the device and 13-14 GB/s to the host;
    # midpoints.
    host_to_device_pageable_gbps: float = 18.0
    device_to_host_pageable_gbps: float = 13.5
    # SOURCES.md, public figures, PCIe: "two GPUs often sit behind one PCIe switch".
    gpus_per_pcie_uplink: int = 2
    # SOURCES.md, H200: (N, ms) to sum N float32 copies of 25.6M parameters on the host
    # (16 threads).
    host_sum_parameter_count: int = 25_600_000
    host_sum_milliseconds: tuple[tuple[int, float], ...] = ((2, 11.9), (4, 15.9), (8, 22.4))
    # The host's Adam update, in parameter-sized passes over host memory, so that it scales with
    # the host's bandwidth (`costs.host_streaming_gbps`). TensorFlow's fused
    # ResourceApplyAdam kernel (tf_keras' Adam) streams 7: reads weights, gradients and both
    # slots, writes weights and slots. Keras 3's Adam is a chain of element-wise ops (about 30
    # passes by count); benchmarks/host_update.py measured it at 3.05x FusedAdam's time (50M
    # parameters, paired median of 10, benchmarks/latest/results.md; 3.33x and 3.44x in other
    # runs against the bare kernel, which FusedAdam matches to 2%), so 7 x 3.05 = 21.35 passes.
    # The default is `replica_strategy.FusedAdam` (the fused kernel), which the docs recommend
    # wherever the update runs on the host; `--host_optimizer=keras` for Keras 3's Adam in
    # every row.
    keras_adam_passes: float = 21.35
    fused_adam_passes: float = 7.0
    host_optimizer: str = HostOptimizer.FUSED
    # A host memory bandwidth to use instead of `host_streaming_gbps`'s (break-even searches).
    host_gbps: float | None = None
    # The measured GPU steps include an SGD update (5 passes: reads weights, gradients, momentum,
    # writes momentum and weights). Where the update runs on a GPU, Adam's extra passes are added
    # at HBM speed.
    measured_step_update_passes: int = 5
    # SOURCES.md, public figures: NVLink 4 is 900 GB/s per GPU counting both directions, 450 GB/s
    # one way; 380 GB/s one way measured GPU to GPU on HGX H100 (NVIDIA/nccl#1264), which
    # shares NVLink 4 and NVSwitch with HGX H200.
    nvlink_gbps_per_direction: float = 380.0
    # SOURCES.md, public figures: HBM3e at 4.8 TB/s, at an assumed 80% for a streaming sum, the
    # ratio the H200's pinned copies reach on PCIe Gen5 x16 (51 of 64 GB/s).
    gpu_memory_gbps: float = 0.8 * 4800.0
    # SOURCES.md, public figures: 141 GB of HBM3e.
    gpu_memory_gigabytes: float = 141.0


@dataclasses.dataclass(frozen=True)
class MixedDevice:
    """One GPU of a mixed pair: public peak figures and a published training throughput.

    Only `resnet50_images_per_second` and `pcie_gbps_per_direction` enter the model; the peaks
    say how far apart the two generations are on paper.

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


# SOURCES.md, public figures: throughputs from NVIDIA DeepLearningExamples' ResNet-50 v1.5
# README ("Training performance results", 1 GPU, + XLA); peaks from the A100 and V100 (SXM)
# datasheets; PCIe one way, Gen4 x16 and Gen3 x16, nominal, from the PCIe specifications.
MIXED_PAIR = (
    MixedDevice("A100 (SXM4, 40 GB)", 19.5, 156.0, 312.0, 31.5, 909.0, 256, "TF32 + XLA"),
    MixedDevice("V100 (SXM2, 16 GB)", 15.7, None, 125.0, 15.75, 412.0, 128, "FP32 + XLA"),
)
# Of a link's nominal bandwidth, what copies reach: the H200's pinned copies reach 51 of 64 GB/s
# on PCIe Gen5 x16 (SOURCES.md); assumed the same on the older links.
PCIE_REACHABLE_FRACTION = 51.0 / 64.0
RESNET50_PARAMETERS = 25_600_000
