"""Defers to pyproject.toml, which holds all of the package's metadata.

It exists for the tools and habits that look for a `setup.py` at the top of a Python project
(`python setup.py --version`, older build scripts, the layout the project's design names). It
passes nothing to `setup()`: setuptools reads the name, version, dependencies and package list
from pyproject.toml, so there is one source of metadata. Build and install with pip
(`pip install .`, `pip wheel .`), which runs this file through setuptools' build backend.
"""

from setuptools import setup

setup()
