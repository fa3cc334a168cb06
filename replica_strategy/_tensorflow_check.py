"""Checks, on import, that the TensorFlow this package was written for is there.

The package builds on TensorFlow's private tf.distribute modules, which change between minor
versions, so a missing or different TensorFlow gets an ImportError that says what to install
instead of a bare `No module named 'tensorflow'` or an error deep inside those modules.
"""

SUPPORTED_TENSORFLOW = "2.21"

_INSTALL = (
    f"Install TensorFlow {SUPPORTED_TENSORFLOW} through one of this package's extras: "
    f"pip install 'replica_strategy[cpu]' (TensorFlow {SUPPORTED_TENSORFLOW}, runs on CPU), "
    "'replica_strategy[gpu]' (with NVIDIA's CUDA libraries, Linux), adding 'legacy' for "
    "tf_keras, e.g. 'replica_strategy[cpu,legacy]'; from a source checkout: "
    "pip install -e '.[cpu]'."
)


def check_tensorflow() -> None:
    """Imports TensorFlow; raises ImportError naming the extra to install if it is unusable."""
    try:
        import tensorflow as tf  # noqa: PLC0415
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":  # TensorFlow is there but broken: its own error says why.
            raise
        raise ImportError(
            f"replica_strategy needs TensorFlow {SUPPORTED_TENSORFLOW}, and no `tensorflow` "
            f"module is installed. {_INSTALL}"
        ) from error
    version = getattr(tf, "__version__", "unknown")
    if version.split(".")[:2] != SUPPORTED_TENSORFLOW.split("."):
        raise ImportError(
            f"replica_strategy supports TensorFlow {SUPPORTED_TENSORFLOW}.x only (it uses "
            f"TensorFlow's private tf.distribute modules). Received: tensorflow {version} "
            f"from {getattr(tf, '__file__', 'an unknown path')}. {_INSTALL}"
        )


check_tensorflow()
