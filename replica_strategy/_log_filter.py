"""Drops TensorFlow log records that would misname the strategy."""

from __future__ import annotations

import contextlib
import logging

from tensorflow.python.platform import tf_logging


@contextlib.contextmanager
def without_records_containing(text):
    """Drops TensorFlow log records whose message contains `text`, for the `with` body only."""

    class _Drop(logging.Filter):
        def filter(self, record):
            return text not in record.getMessage()

    drop = _Drop()
    logger = tf_logging.get_logger()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
