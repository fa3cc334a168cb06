"""The GPU model's charts: efficiency against GPU count, and the summary bars of SCALING.md.

matplotlib is optional (the `benchmarks` extra); it is imported when a chart is drawn, so the
tables need only the standard library.
"""

from collections.abc import Sequence

from benchmarks.gpu_model.hardware import MODELS, PRECISIONS, Hardware
from benchmarks.gpu_model.markdown import PLACEMENT_LABELS
from benchmarks.gpu_model.scaling import Scaling, scaling_points
from benchmarks.gpu_model.step_time import STEP_PLACEMENTS
from benchmarks.placements import StepPlacement


class MissingMatplotlib(ImportError):
    """A chart was asked for and matplotlib is not installed."""


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
        MissingMatplotlib: If matplotlib is not installed.
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
    StepPlacement.CPU_PINNED: "#1f77b4",
    StepPlacement.CPU_PAGEABLE: "#aec7e8",
    StepPlacement.MIRROR_WEIGHTS_KERAS_ADAM: "#bcbd22",
    StepPlacement.MIRROR_WEIGHTS: "#2ca02c",
    StepPlacement.MIRROR_WEIGHTS_DELAYED: "#98df8a",
    StepPlacement.GPU0: "#17becf",
    StepPlacement.MIRRORED: "#ff7f0e",
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
        MissingMatplotlib: If matplotlib is not installed.
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
    """matplotlib's pyplot on the file-only backend.

    Imported here, not at the top: matplotlib is optional and only the charts need it.
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as error:
        raise MissingMatplotlib(
            "Plots need matplotlib: `pip install matplotlib`, or leave the plot flags unset."
        ) from error
    return pyplot
