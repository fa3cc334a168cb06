"""Turns the benchmark's raw measurements into summaries, Markdown tables, JSON and a PNG.

Raw measurements, as `benchmark.py` collects them:
- throughput: {(mode, model, label): Cell}, a Cell holding the window times of one contestant;
- memory: [{"contestant", "device_count", "runs": [probe results]}].
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
from collections.abc import Sequence

from benchmarks import contestants as contestants_lib

_MEGABYTE = 2**20


@dataclasses.dataclass
class Cell:
    """The measurements of one contestant in one mode on one model.

    Attributes:
        contestant: Who ran.
        seconds: Wall time of each timed window, in repetition order.
        failed: "failed: <reason>" when the contestant could not run, else None.
    """

    contestant: contestants_lib.Contestant
    seconds: list[float] = dataclasses.field(default_factory=list)
    failed: str | None = None


@dataclasses.dataclass(frozen=True)
class Spread:
    """Minimum, median and maximum of repeated measurements."""

    minimum: float
    median: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        return cls(min(samples), statistics.median(samples), max(samples))

    def format(self, digits: int = 0) -> str:
        return f"{self.median:,.{digits}f} [{self.minimum:,.{digits}f}–{self.maximum:,.{digits}f}]"


def throughput(cell: Cell, samples_per_window: int) -> Spread | None:
    """Samples per second of each window of `cell`, as a spread; None if it has no windows."""
    if cell.failed or not cell.seconds:
        return None
    return Spread.of([samples_per_window / seconds for seconds in cell.seconds])


def paired_ratio(numerator: Cell | None, denominator: Cell | None) -> Spread | None:
    """numerator / denominator of window times, repetition by repetition.

    The contestants ran interleaved, so the windows of one repetition met the same machine
    noise: per-repetition ratios cancel it better than a ratio of medians.
    """
    if numerator is None or denominator is None or numerator.failed or denominator.failed:
        return None
    pairs = list(zip(numerator.seconds, denominator.seconds, strict=False))
    if not pairs:
        return None
    return Spread.of([top / bottom for top, bottom in pairs])


def _cell_text(cell: Cell | None, samples_per_window: int) -> str:
    if cell is None:
        return "–"
    if cell.failed:
        return cell.failed
    spread = throughput(cell, samples_per_window)
    return spread.format() if spread else "–"


def throughput_table(cells: dict, mode: str, model: str, device_counts, samples_per_window: int):
    """A Markdown table: a row per strategy, a column per device count, samples/s per cell."""
    header = "| Strategy | " + " | ".join(f"{count} device(s)" for count in device_counts) + " |"
    lines = [header, "|---" * (len(device_counts) + 1) + "|"]
    for name in contestants_lib.NAMES:
        row = []
        for count in device_counts:
            label = contestants_lib.Contestant(name, count).label
            single = name in contestants_lib.SINGLE_DEVICE_NAMES
            cell = cells.get((mode, model, label)) if (count == 1 or not single) else None
            row.append(_cell_text(cell, samples_per_window))
        if any(text != "–" for text in row):
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def peer_ratios(cells: dict, modes, models, device_counts) -> list[dict]:
    """ReplicaStrategy's throughput over each peer's, per mode, model and device count."""
    rows = []
    for mode in modes:
        for model in models:
            for peer in (contestants_lib.MIRRORED, contestants_lib.CENTRAL_STORAGE):
                ratios = {}
                for count in device_counts:
                    ours = cells.get((mode, model, f"{contestants_lib.REPLICA} x{count}"))
                    theirs = cells.get((mode, model, f"{peer} x{count}"))
                    # Throughput ratio = inverse time ratio.
                    ratios[count] = paired_ratio(theirs, ours)
                rows.append({"mode": mode, "model": model, "peer": peer, "ratios": ratios})
    return rows


def overheads(cells: dict, modes, models) -> list[dict]:
    """Step time of ReplicaStrategy on one device over no strategy, per mode and model."""
    return [
        {
            "mode": mode,
            "model": model,
            "ratio": paired_ratio(
                cells.get((mode, model, f"{contestants_lib.REPLICA} x1")),
                cells.get((mode, model, contestants_lib.NO_STRATEGY)),
            ),
        }
        for mode in modes
        for model in models
    ]


def _spread_text(spread: Spread | None) -> str:
    return spread.format(2) if spread else "n/a"


def memory_rows(memory: list[dict]) -> list[dict]:
    """One summary per memory configuration: parameters, variable MiB, RSS spreads in MiB."""
    rows = []
    for entry in memory:
        runs = [run for run in entry["runs"] if "failed" not in run]
        row = {"contestant": entry["contestant"], "device_count": entry["device_count"]}
        if not runs:
            row["failed"] = "failed: " + entry["runs"][0]["failed"]
        else:
            row["parameters"] = runs[0]["parameters"]
            row["variable_mib"] = runs[0]["variable_bytes"] / _MEGABYTE
            row["peak_rss_mib"] = Spread.of([run["peak_rss_bytes"] / _MEGABYTE for run in runs])
            row["growth_mib"] = Spread.of(
                [
                    (run["peak_rss_bytes"] - run["rss_after_import_bytes"]) / _MEGABYTE
                    for run in runs
                ]
            )
        rows.append(row)
    return rows


def memory_table(rows: list[dict]) -> str:
    """A Markdown table of `memory_rows`."""
    lines = [
        "| Strategy | Replicas | Parameters | Variables (MiB) | Peak RSS (MiB) "
        "| Peak RSS - RSS after import (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "failed" in row:
            figures = [row["failed"], "", "", ""]
        else:
            figures = [
                f"{row['parameters']:,}",
                f"{row['variable_mib']:,.0f}",
                row["peak_rss_mib"].format(),
                row["growth_mib"].format(),
            ]
        lines.append(
            f"| {row['contestant']} | {row['device_count']} | " + " | ".join(figures) + " |"
        )
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The whole report as Markdown: machine, settings, and every table."""
    settings = results["settings"]
    samples_per_window = settings["global_batch"] * settings["steps_per_window"]
    parts = [
        "# replica_strategy benchmark",
        "",
        f"Date: {results['date']}. Machine: {results['machine']['cores']} cores "
        f"(`nproc`), {results['machine']['cpu_model']}; TensorFlow "
        f"{results['machine']['tensorflow']}, Keras {results['machine']['keras']}.",
        f"Global batch {settings['global_batch']} on every device count; "
        f"{settings['repetitions']} interleaved repetitions of {settings['steps_per_window']} "
        f"steps per contestant after {settings['warmup_steps']} warm-up steps. Logical CPUs share "
        "the machine's cores, so more devices add overhead, not compute.",
        "Cells: median [min–max] over repetitions.",
    ]
    cells = results["cells"]
    for mode in settings["modes"]:
        for model in settings["models"]:
            parts += [
                "",
                f"## `{mode}`, {model}: samples/s",
                "",
                throughput_table(cells, mode, model, settings["device_counts"], samples_per_window),
            ]
    parts += _ratio_sections(results)
    if results["memory"]:
        parts += ["", "## Memory: MLP trained two steps, one fresh process each", ""]
        parts.append(memory_table(memory_rows(results["memory"])))
    return "\n".join(parts) + "\n"


def _ratio_sections(results: dict) -> list[str]:
    settings = results["settings"]
    cells, counts = results["cells"], settings["device_counts"]
    parts = [
        "",
        "## ReplicaStrategy throughput / peer throughput (> 1: ReplicaStrategy is faster)",
        "",
        "| Mode | Model | Peer | " + " | ".join(f"{count} device(s)" for count in counts) + " |",
        "|---|---|---" + "|---" * len(counts) + "|",
    ]
    for row in peer_ratios(cells, settings["modes"], settings["models"], counts):
        ratios = " | ".join(_spread_text(row["ratios"][count]) for count in counts)
        parts.append(f"| {row['mode']} | {row['model']} | {row['peer']} | {ratios} |")
    parts += [
        "",
        "## Overhead: step time of ReplicaStrategy on 1 device / no strategy",
        "",
        "| Mode | Model | Ratio |",
        "|---|---|---|",
    ]
    for row in overheads(cells, settings["modes"], settings["models"]):
        parts.append(f"| {row['mode']} | {row['model']} | {_spread_text(row['ratio'])} |")
    return parts


def to_json(results: dict) -> str:
    """The raw results as JSON: every window time, failure and memory probe."""
    serializable = dict(results)
    serializable["cells"] = [
        {
            "mode": mode,
            "model": model,
            "contestant": cell.contestant.name,
            "device_count": cell.contestant.device_count,
            "seconds": cell.seconds,
            "failed": cell.failed,
        }
        for (mode, model, _), cell in results["cells"].items()
    ]
    return json.dumps(serializable, indent=1)


def write_plot(results: dict, path: pathlib.Path) -> bool:
    """Plots samples/s against device count per mode and model, and memory; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    settings = results["settings"]
    panels = [(mode, model) for mode in settings["modes"] for model in settings["models"]]
    columns = len(settings["models"])
    rows = len(settings["modes"]) + (1 if results["memory"] else 0)
    figure, axes = pyplot.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for index, (mode, model) in enumerate(panels):
        _plot_throughput(axes[index // columns][index % columns], results, mode, model)
    if results["memory"]:
        _plot_memory(axes[-1][0], memory_rows(results["memory"]))
        for axis in axes[-1][1:]:
            axis.axis("off")
    figure.suptitle(
        f"{results['date']}, {results['machine']['cores']} cores, {results['machine']['cpu_model']}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True


def _plot_throughput(axis, results: dict, mode: str, model: str) -> None:
    settings = results["settings"]
    samples_per_window = settings["global_batch"] * settings["steps_per_window"]
    for name in contestants_lib.NAMES:
        points = []
        for count in settings["device_counts"]:
            cell = results["cells"].get(
                (mode, model, contestants_lib.Contestant(name, count).label)
            )
            spread = throughput(cell, samples_per_window) if cell else None
            if spread and (count == 1 or name not in contestants_lib.SINGLE_DEVICE_NAMES):
                points.append((count, spread))
        if points:
            counts = [count for count, _ in points]
            medians = [spread.median for _, spread in points]
            errors = [
                [spread.median - spread.minimum for _, spread in points],
                [spread.maximum - spread.median for _, spread in points],
            ]
            axis.errorbar(counts, medians, yerr=errors, marker="o", capsize=3, label=name)
    axis.set_title(f"{mode}, {model}")
    axis.set_xlabel("devices (logical CPUs)")
    axis.set_ylabel("samples/s")
    axis.set_xticks(settings["device_counts"])
    axis.legend(fontsize="small")


def _plot_memory(axis, rows: list[dict]) -> None:
    counts = sorted({row["device_count"] for row in rows})
    for name in sorted({row["contestant"] for row in rows}):
        mine = [row for row in rows if row["contestant"] == name and "failed" not in row]
        replicas = [row["device_count"] for row in mine]
        (line,) = axis.plot(
            replicas, [row["variable_mib"] for row in mine], marker="o", label=f"{name}: variables"
        )
        axis.plot(
            replicas,
            [row["peak_rss_mib"].median for row in mine],
            marker="s",
            linestyle="--",
            color=line.get_color(),
            label=f"{name}: peak RSS",
        )
    axis.set_title("memory")
    axis.set_xlabel("replicas")
    axis.set_ylabel("MiB")
    axis.set_xticks(counts)
    axis.legend(fontsize="small")
