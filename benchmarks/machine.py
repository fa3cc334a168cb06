"""The machine a benchmark ran on, as its results record it."""

import os
import pathlib
import platform


def cpu_model() -> str:
    """The host CPU's model name from /proc/cpuinfo, else what `platform` says."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def description() -> dict:
    """{"cores", "cpu_model"}: what every result file says about the host."""
    return {"cores": os.cpu_count(), "cpu_model": cpu_model()}
