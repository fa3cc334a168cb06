"""Builds this project's wheel the way pip does for users, for the packaging and install tests."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def copy_source(tmp: pathlib.Path) -> pathlib.Path:
    """Copies what the wheel is built from (top-level files, the package) to `tmp/source`."""
    source = tmp / "source"
    source.mkdir()
    for path in ROOT.iterdir():
        if path.is_file():
            shutil.copy(path, source / path.name)
    shutil.copytree(
        ROOT / "replica_strategy",
        source / "replica_strategy",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return source


def build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    """Builds the wheel from a copy of the source, so that no build/ lands in the work tree.

    pip builds it in an isolated environment with the `[build-system]` requirements of
    pyproject.toml, fetched from the package index, as for any user; setuptools' backend runs
    the top-level setup.py, which defers to pyproject.toml.
    """
    source = copy_source(tmp)
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, source],
        check=True,
        timeout=900,
    )
    (wheel,) = wheels.glob("replica_strategy-*.whl")
    return wheel
