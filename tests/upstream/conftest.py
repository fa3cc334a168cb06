"""The vendored upstream files are imported by the runners beside them, never collected alone.

Each is upstream's, byte for byte (UPSTREAM.md in each folder): run unadapted, they would
build MirroredStrategy, TPU and multi-worker strategies. tests/conftest.py (the parent) has put
tests/ on sys.path and configured the logical CPUs.
"""

collect_ignore = ["tf_keras/distribute", "keras/src"]


def pytest_configure(config):
    # Keras' own conftest.py registers this mark; its vendored tests use it.
    config.addinivalue_line("markers", "requires_trainable_backend: Keras' mark (upstream).")
