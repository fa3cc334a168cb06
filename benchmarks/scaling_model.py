"""The GPU model's command line: prints its tables, rewrites SCALING.md, draws its charts.

The model itself is `benchmarks/gpu_model/` (hardware facts, step time, memory, rendering);
benchmarks/SCALING.md explains it and holds the tables. Run from the repository root:

    python benchmarks/scaling_model.py                                  # print the tables
    python benchmarks/scaling_model.py --markdown_out=/tmp/scaling.md   # also write them
    python benchmarks/scaling_model.py --update_document=benchmarks/SCALING.md
    python benchmarks/scaling_model.py --plot_out=/tmp/scaling.png      # needs matplotlib
    python benchmarks/scaling_model.py --summary_chart_out=benchmarks/scaling_summary.png
"""

import pathlib
import sys
from collections.abc import Sequence

from absl import app, flags

if not __package__:  # Run as a script: make `benchmarks` importable.
    sys.path.append(str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.gpu_model import charts, markdown, scaling  # noqa: E402
from benchmarks.gpu_model.hardware import Hardware  # noqa: E402
from benchmarks.placements import HostOptimizer  # noqa: E402

_PER_REPLICA_BATCH = flags.DEFINE_multi_integer(
    "per_replica_batch",
    list(scaling.DEFAULT_PER_REPLICA_BATCHES),
    "Per-GPU batch of a weak-scaling table; repeat for several. 32 and 128 were measured, other "
    "batches are interpolated linearly.",
)
_GLOBAL_BATCH = flags.DEFINE_integer(
    "global_batch",
    scaling.DEFAULT_GLOBAL_BATCH,
    "Global batch of the strong-scaling tables; 0 leaves them out.",
)
_GPU_COUNTS = flags.DEFINE_multi_integer(
    "gpu_counts", list(scaling.DEFAULT_REPLICA_COUNTS), "GPU counts; repeat for several."
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
    [str(optimizer) for optimizer in HostOptimizer],
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


def scalings_from_flags() -> list[scaling.Scaling]:
    """The batch regimes the flags ask for; raises app.UsageError for batches below 1."""
    if min(_PER_REPLICA_BATCH.value) < 1 or _GLOBAL_BATCH.value < 0:
        raise app.UsageError(
            "--per_replica_batch must be >= 1 and --global_batch >= 0. Received: "
            f"per_replica_batch={_PER_REPLICA_BATCH.value}, global_batch={_GLOBAL_BATCH.value}."
        )
    scalings = [scaling.Scaling("weak", batch) for batch in _PER_REPLICA_BATCH.value]
    if _GLOBAL_BATCH.value:
        scalings.append(scaling.Scaling("strong", _GLOBAL_BATCH.value))
    return scalings


def update_document(path: str, tables: str) -> None:
    """Rewrites the generated block of the Markdown file at `path`."""
    with open(path, encoding="utf-8") as file:
        document = file.read()
    try:
        updated = markdown.replace_generated_block(document, tables)
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
    tables = markdown.build_markdown(hardware, scalings, replica_counts, _BF16_GRADIENT_DTYPE.value)
    print(tables)
    if _MARKDOWN_OUT.value:
        with open(_MARKDOWN_OUT.value, "w", encoding="utf-8") as file:
            file.write(tables)
    if _UPDATE_DOCUMENT.value:
        update_document(_UPDATE_DOCUMENT.value, tables)
    try:
        if _SUMMARY_CHART_OUT.value:
            charts.plot_summary(
                hardware,
                scalings,
                max(replica_counts),
                _BF16_GRADIENT_DTYPE.value,
                _SUMMARY_CHART_OUT.value,
            )
        if _PLOT_OUT.value:
            charts.plot_efficiency(
                hardware, scalings[0], replica_counts, _BF16_GRADIENT_DTYPE.value, _PLOT_OUT.value
            )
    except charts.MissingMatplotlib as error:
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    app.run(main)
