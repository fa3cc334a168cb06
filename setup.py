"""Package metadata; tool settings live in pyproject.toml."""

import pathlib

from setuptools import find_packages, setup

_ROOT = pathlib.Path(__file__).parent
_TF = "2.21.*"


def _version():
    namespace = {}
    exec((_ROOT / "replica_strategy" / "version.py").read_text(), namespace)
    return namespace["__version__"]


_README = _ROOT / "README.md"

setup(
    name="replica_strategy",
    version=_version(),
    description="A tf.distribute strategy that brings back Keras' multi_gpu_model.",
    long_description=_README.read_text() if _README.exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["replica_strategy", "replica_strategy.*"]),
    python_requires=">=3.10",
    install_requires=["numpy", "absl-py"],
    # TensorFlow comes through an extra, so users pick the flavour (as TF add-ons do).
    extras_require={
        "cpu": [f"tensorflow-cpu=={_TF}"],
        "gpu": [f"tensorflow[and-cuda]=={_TF}"],
        "legacy": [f"tf-keras=={_TF}"],
        "examples": ["scikit-learn", "tensorboard"],
        "benchmarks": ["matplotlib"],
        # ruff is pinned so that `ruff format --check` in CI judges what developers formatted.
        "test": [
            "pytest",
            "hypothesis",
            "scikit-learn",
            "matplotlib",
            "tensorboard",
            f"tf-keras=={_TF}",
            "ruff==0.17.6",
        ],
    },
)
