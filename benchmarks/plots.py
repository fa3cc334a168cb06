"""The benchmark's pictures: results.png (everything) and headline.png (the README's figure).

Rules for both: every y axis starts at zero; one legend per figure, outside the data; a strategy
has the same colour in every panel (`COLOURS`); memory comes first; ReplicaStrategy's throughput
is also shown as a ratio to MirroredStrategy's, with a line at 1.0.
"""

from __future__ import annotations

import pathlib

from benchmarks import contestants as contestants_lib
from benchmarks import report

COLOURS = {
    contestants_lib.NO_STRATEGY: "#7f7f7f",
    contestants_lib.ONE_DEVICE: "#8c564b",
    contestants_lib.REPLICA: "#1f77b4",
    contestants_lib.MIRROR_WEIGHTS: "#2ca02c",
    contestants_lib.MIRRORED: "#ff7f0e",
    contestants_lib.CENTRAL_STORAGE: "#9467bd",
}
MODEL_LINESTYLES = {"mlp": "-", "cnn": "--"}
MODE_MARKERS = {"fit": "o", "predict": "s", "custom_loop": "^"}
_PEER = contestants_lib.MIRRORED


def _pyplot():
    """matplotlib's pyplot on the file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        return None
    return pyplot


def _memory_panels(axes, results: dict) -> None:
    """Variables on each replica device, and on all devices, against the replica count."""
    rows = [row for row in report.memory_rows(results["memory"]) if "failed" not in row]
    counts = sorted({row["device_count"] for row in rows})
    parameters = rows[0]["parameters"] if rows else 0
    for axis, key, title in (
        (axes[0], "replica_mib", "variables on each replica device"),
        (axes[1], "variable_mib", "variables on all devices, host included"),
    ):
        for name in COLOURS:
            mine = sorted(
                (row["device_count"], row[key]) for row in rows if row["contestant"] == name
            )
            if mine:
                axis.plot(*zip(*mine, strict=True), marker="o", color=COLOURS[name], label=name)
        axis.set_title(f"{title}\n({parameters / 1e6:.0f}M-parameter MLP, Adam)", fontsize="medium")
        axis.set(xlabel="replicas", ylabel="MiB", xticks=counts)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)


def _ratio_panel(axis, results: dict, modes) -> None:
    """Each ReplicaStrategy mode's throughput / MirroredStrategy's, with a line at 1.0."""
    settings = results["settings"]
    counts = [count for count in settings["device_counts"] if count > 1] or settings[
        "device_counts"
    ]
    rows = [
        row
        for row in report.peer_ratios(results["cells"], modes, settings["models"], counts)
        if row["peer"] == _PEER
    ]
    for index, row in enumerate(rows):
        # Side by side around each device count, so error bars at one count do not hide others.
        offset = 0.05 * (index - (len(rows) - 1) / 2)
        points = [(count, row["ratios"][count]) for count in counts if row["ratios"][count]]
        if not points:
            continue
        medians = [spread.median for _, spread in points]
        errors = [
            [spread.median - spread.minimum for _, spread in points],
            [spread.maximum - spread.median for _, spread in points],
        ]
        axis.errorbar(
            [count + offset for count, _ in points],
            medians,
            yerr=errors,
            marker=MODE_MARKERS.get(row["mode"], "o"),
            capsize=3,
            color=COLOURS[row["name"]],
            linestyle=MODEL_LINESTYLES.get(row["model"], "-"),
            label=f"{row['name']} / {_PEER}, {row['mode']}, {row['model']}",
        )
    axis.axhline(1.0, color="black", linewidth=1)
    axis.set_title(
        f"throughput / {_PEER} throughput\n(above 1: ReplicaStrategy faster; logical CPUs)",
        fontsize="medium",
    )
    axis.set(xlabel="devices", ylabel="ratio", xticks=counts)
    axis.set_xlim(min(counts) - 0.5, max(counts) + 0.5)
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)


def _throughput_panel(axis, results: dict, mode: str, model: str) -> None:
    settings = results["settings"]
    samples_per_window = settings["global_batch"] * settings["steps_per_window"]
    for name in COLOURS:
        points = []
        for count in settings["device_counts"]:
            if count > 1 and name in contestants_lib.SINGLE_DEVICE_NAMES:
                continue
            label = contestants_lib.Contestant(name, count).label
            cell = results["cells"].get((mode, model, label))
            spread = report.throughput(cell, samples_per_window) if cell else None
            if spread:
                points.append((count, spread))
        if not points:
            continue
        axis.errorbar(
            [count for count, _ in points],
            [spread.median for _, spread in points],
            yerr=[
                [spread.median - spread.minimum for _, spread in points],
                [spread.maximum - spread.median for _, spread in points],
            ],
            marker="o",
            capsize=3,
            color=COLOURS[name],
            label=name,
        )
    axis.set_title(f"{mode}, {model}: samples/s", fontsize="medium")
    axis.set(xlabel="devices (logical CPUs)", ylabel="samples/s", xticks=settings["device_counts"])
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)


def _figure_legend(figure, axes) -> None:
    """One legend below the panels, each label once."""
    labels = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    figure.legend(
        labels.values(),
        labels.keys(),
        loc="lower center",
        ncol=min(3, max(1, len(labels))),
        fontsize="small",
        frameon=False,
    )


def _caption(results: dict) -> str:
    machine = results["machine"]
    return f"{results['date']}, {machine['cores']} cores, {machine['cpu_model']}"


def write_results_plot(results: dict, path: pathlib.Path) -> bool:
    """Memory, the ratio to MirroredStrategy per mode, then samples/s per mode and model.

    Returns:
        False when matplotlib is not installed (nothing written).
    """
    pyplot = _pyplot()
    if pyplot is None:
        return False
    settings = results["settings"]
    columns = 3
    throughput_panels = [
        (mode, model) for mode in settings["modes"] for model in settings["models"]
    ]
    top = 3 if results["memory"] else 1
    rows = 1 + -(-len(throughput_panels) // columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows + 1.2))
    axes = axes.reshape(rows, columns)
    flat = list(axes.flat)
    if results["memory"]:
        _memory_panels(flat[:2], results)
    _ratio_panel(flat[top - 1], results, settings["modes"])
    for axis, (mode, model) in zip(flat[columns:], throughput_panels, strict=False):
        _throughput_panel(axis, results, mode, model)
    used = columns + len(throughput_panels)
    for axis in flat[used:] + (flat[top:columns] if top < columns else []):
        axis.axis("off")
    _figure_legend(figure, flat)
    figure.suptitle(_caption(results))
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return True


def write_headline(results: dict, path: pathlib.Path) -> bool:
    """The README's figure: memory against replicas, and throughput / MirroredStrategy's (fit).

    Returns:
        False when matplotlib is not installed or there is no memory result (nothing written).
    """
    pyplot = _pyplot()
    if pyplot is None or not results["memory"]:
        return False
    figure, axes = pyplot.subplots(1, 3, figsize=(15, 5))
    _memory_panels(axes[:2], results)
    _ratio_panel(axes[2], results, [mode for mode in results["settings"]["modes"] if mode == "fit"])
    _figure_legend(figure, axes)
    figure.suptitle(
        "ReplicaStrategy against MirroredStrategy: memory and fit throughput on logical CPUs "
        f"({_caption(results)})",
        fontsize="medium",
    )
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return True
