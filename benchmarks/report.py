"""Turns the benchmark's raw measurements into summaries, Markdown tables, JSON and a PNG.

Raw measurements, as `suite.run` collects them:
- throughput: {(mode, model, label): workloads.Cell}, the window times of one contestant;
- memory: [{"contestant", "device_count", "runs": [probe results]}].
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence

from benchmarks import contestants as contestants_lib
from benchmarks import host_update, mixed_speeds, traffic
from benchmarks.workloads import Cell

_MEGABYTE = 2**20
_HOST = "/cpu:0"  # the memory probe's and traffic meter's host; replicas are /cpu:1 ... /cpu:N


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
    """Each ReplicaStrategy mode's throughput over each peer's, per mode, model, device count."""
    rows = []
    for mode in modes:
        for model in models:
            for name in contestants_lib.REPLICA_NAMES:
                for peer in (contestants_lib.MIRRORED, contestants_lib.CENTRAL_STORAGE):
                    ratios = {}
                    for count in device_counts:
                        ours = cells.get((mode, model, f"{name} x{count}"))
                        theirs = cells.get((mode, model, f"{peer} x{count}"))
                        # Throughput ratio = inverse time ratio.
                        ratios[count] = paired_ratio(theirs, ours)
                    rows.append(
                        {"mode": mode, "model": model, "name": name, "peer": peer, "ratios": ratios}
                    )
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
            per_device = runs[0].get("variable_bytes_per_device", {})
            replica_bytes = [size for device, size in per_device.items() if device != _HOST]
            row["host_mib"] = per_device.get(_HOST, 0) / _MEGABYTE
            row["replica_mib"] = max(replica_bytes, default=0) / _MEGABYTE
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
        "| Strategy | Replicas | Parameters | Variables, all devices (MiB) | on the host "
        "/cpu:0 (MiB) | on each replica device, max (MiB) | Peak RSS (MiB) "
        "| Peak RSS - RSS after import (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "failed" in row:
            figures = [row["failed"], "", "", "", "", ""]
        else:
            figures = [
                f"{row['parameters']:,}",
                f"{row['variable_mib']:,.0f}",
                f"{row['host_mib']:,.0f}",
                f"{row['replica_mib']:,.0f}",
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
        f"{results['machine']['tensorflow']}, Keras {results['machine']['keras']}; "
        f"`replica_strategy` from `{results['machine'].get('replica_strategy', '?')}`.",
        f"Global batch {settings['global_batch']} on every device count; "
        f"{settings['repetitions']} interleaved repetitions of {settings['steps_per_window']} "
        f"steps per contestant after {settings['warmup_steps']} warm-up steps. Logical CPUs share "
        "the machine's cores, so more devices add overhead, not compute.",
        "Cells: median [min–max] over repetitions.",
    ]
    parts += _memory_and_traffic_sections(results)
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
    return "\n".join(parts) + "\n"


def _memory_and_traffic_sections(results: dict) -> list[str]:
    parts = []
    if results["memory"]:
        parts += [
            "",
            "## Memory: MLP trained two steps with Adam, one fresh process each",
            "",
            "Host /cpu:0 (ReplicaStrategy's parameter device), replicas /cpu:1 ... /cpu:N. "
            "Variables are weights, Adam's two slots and its counters.",
            "",
            memory_table(memory_rows(results["memory"])),
        ]
    measured = traffic.measured(results.get("traffic", []))
    if results.get("traffic"):
        parameter_bytes = measured[0]["parameter_bytes"] if measured else 0
        parts += [
            "",
            "## Bytes that cross devices per training step (`fit`, Adam)",
            "",
            "Measured from the executed step (partition graphs' `_Recv` nodes, sizes from the "
            "executor's memory log; benchmarks/traffic.py), in multiples of P, the bytes of the "
            f"trainable weights (P = {parameter_bytes:,} bytes here). Host /cpu:0, replicas "
            "/cpu:1 ... /cpu:N. MirroredStrategy with `ReductionToOneDevice()` (its CPU default, "
            "collective ops, bypasses Send/Recv); an NCCL ring moves the same total. Input "
            "batches reach the replicas through the iterator's RemoteCall, counted apart.",
            "",
            "`replica_strategy` measured: "
            + ", ".join(sorted({result["replica_strategy"] for result in measured}))
            + ".",
            "",
            traffic.traffic_table(results["traffic"]),
            "",
            "Per (sender, receiver) pair:",
            "",
            traffic.pairs_table(results["traffic"]),
            "",
            "Variables per device (weights, Adam's slots), in multiples of P:",
            "",
            traffic.memory_table(results["traffic"]),
        ]
    update = results.get("host_update") or {}
    if update:
        parts += ["", "## Host optimizer update: Keras 3 Adam and FusedAdam on this CPU", ""]
        if "failed" in update:
            parts.append(f"failed: {update['failed']}")
        else:
            parts.append(host_update.markdown(update))
    mixed = results.get("mixed_speeds") or {}
    if mixed:
        parts += [
            "",
            "## One replica 3x slower (SIMULATION): split even, by speed, auto; MirroredStrategy",
            "",
        ]
        if "failed" in mixed:
            parts.append(f"failed: {mixed['failed']}")
        else:
            parts.append(mixed_speeds.markdown(mixed))
    return parts


def _ratio_sections(results: dict) -> list[str]:
    settings = results["settings"]
    cells, counts = results["cells"], settings["device_counts"]
    parts = [
        "",
        "## ReplicaStrategy throughput / peer throughput (> 1: ReplicaStrategy is faster)",
        "",
        "| Mode | Model | ReplicaStrategy | Peer | "
        + " | ".join(f"{count} device(s)" for count in counts)
        + " |",
        "|---|---|---|---" + "|---" * len(counts) + "|",
    ]
    for row in peer_ratios(cells, settings["modes"], settings["models"], counts):
        ratios = " | ".join(_spread_text(row["ratios"][count]) for count in counts)
        parts.append(
            f"| {row['mode']} | {row['model']} | {row['name']} | {row['peer']} | {ratios} |"
        )
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
