"""Writes a benchmark run's results: results.json, results.md and the plots."""

from __future__ import annotations

import pathlib

from absl import logging

from benchmarks import mixed_speeds, plots, report


def write_outputs(results: dict, output_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Writes results.json, results.md and (with matplotlib) results.png, headline.png and
    mixed_speeds.png.

    Returns:
        {"json", "markdown"[, "plot"][, "headline"][, "mixed_speeds_plot"]}: the paths written
        into `output_dir`.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "results.json", "markdown": output_dir / "results.md"}
    paths["json"].write_text(report.to_json(results))
    paths["markdown"].write_text(report.markdown(results))
    plot_path, headline_path = output_dir / "results.png", output_dir / "headline.png"
    if plots.write_results_plot(results, plot_path):
        paths["plot"] = plot_path
    else:
        logging.warning("matplotlib is not installed: no plot (pip install matplotlib).")
    if plots.write_headline(results, headline_path):
        paths["headline"] = headline_path
    mixed = results.get("mixed_speeds") or {}
    mixed_path = output_dir / "mixed_speeds.png"
    if "rows" in mixed and mixed_speeds.write_plot(mixed, mixed_path):
        paths["mixed_speeds_plot"] = mixed_path
    return paths
