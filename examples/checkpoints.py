"""Per-epoch checkpoints that survive a crash and refuse to load a damaged file.

A checkpoint is model + optimizer + epoch counter, saved with `tf.train.CheckpointManager`
(whose files TensorFlow writes under temporary names and renames). It counts as committed only
once its manifest, `<prefix>.manifest.json` with the SHA-256 of each of its files, is in place
(written to a temporary name, then renamed). On restore:

- a checkpoint without a manifest was being written when the process died: it is reported and
  skipped, and the previous committed checkpoint is used;
- a checkpoint whose files do not match their manifest raises `CorruptCheckpointError` naming
  the file: it is never loaded silently.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import tensorflow as tf
from absl import logging

_MANIFEST_SUFFIX = ".manifest.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing or does not match the checksum its manifest recorded."""


class EpochCheckpoints:
    """Saves and restores (model, optimizer, epoch) in `directory`, once per epoch.

    Args:
      directory: where the checkpoints go.
      model: a built Keras model.
      optimizer: a built optimizer (its slots must exist before `restore_latest`).
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: str, model, optimizer, max_to_keep: int = 3):
        self.directory = directory = os.path.abspath(directory)
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self._epoch)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep)

    def save(self, epoch: int) -> str:
        """Saves the state after `epoch` epochs (1-based); returns the checkpoint prefix."""
        self._epoch.assign(epoch)
        prefix = self._manager.save(checkpoint_number=epoch)
        _write_manifest(prefix)
        _remove_stale_manifests(self.directory, self._manager.checkpoints)
        return prefix

    def restore_latest(self) -> tuple[int, str | None]:
        """Restores the newest committed checkpoint.

        Returns:
          (epochs already trained, checkpoint prefix), or (0, None) when there is none.

        Raises:
          CorruptCheckpointError: naming the file, when a committed checkpoint is damaged.
        """
        for prefix in reversed(self._manager.checkpoints):
            if not os.path.exists(prefix + _MANIFEST_SUFFIX):
                logging.warning(
                    "Skipping checkpoint %s: it has no manifest, so writing it was interrupted.",
                    prefix,
                )
                continue
            verify(prefix)
            try:
                self._checkpoint.restore(prefix).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as error:
                raise CorruptCheckpointError(
                    f"Checkpoint {prefix} could not be restored: {error}. Delete its files "
                    f"({prefix}.*) to resume from the previous checkpoint."
                ) from error
            return int(self._epoch.numpy()), prefix
        return 0, None


def verify(prefix: str) -> None:
    """Checks every file of checkpoint `prefix` against its manifest.

    Raises:
      CorruptCheckpointError: naming the first file that is missing or whose SHA-256 differs.
    """
    manifest_path = prefix + _MANIFEST_SUFFIX
    try:
        with open(manifest_path) as file:
            expected = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(
            f"Checkpoint manifest {manifest_path} is unreadable ({error}); delete {prefix}.* "
            "to resume from the previous checkpoint."
        ) from error
    directory = os.path.dirname(prefix)
    for name, digest in sorted(expected.items()):
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise CorruptCheckpointError(
                f"Checkpoint file {path} is missing (listed in {manifest_path}); delete "
                f"{prefix}.* to resume from the previous checkpoint."
            )
        if _sha256(path) != digest:
            raise CorruptCheckpointError(
                f"Checkpoint file {path} is corrupt: its SHA-256 differs from the one recorded "
                f"in {manifest_path}. Delete {prefix}.* to resume from the previous checkpoint."
            )


def _checkpoint_files(prefix: str) -> list[str]:
    return sorted(
        glob.glob(glob.escape(prefix) + ".index") + glob.glob(glob.escape(prefix) + ".data-*")
    )


def _write_manifest(prefix: str) -> None:
    digests = {os.path.basename(path): _sha256(path) for path in _checkpoint_files(prefix)}
    temporary = prefix + _MANIFEST_SUFFIX + ".tmp"
    with open(temporary, "w") as file:
        json.dump(digests, file, indent=2, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, prefix + _MANIFEST_SUFFIX)


def _remove_stale_manifests(directory: str, kept_prefixes: list[str]) -> None:
    kept = {prefix + _MANIFEST_SUFFIX for prefix in kept_prefixes}
    for path in glob.glob(os.path.join(glob.escape(directory), "*" + _MANIFEST_SUFFIX)):
        if path not in kept:
            os.remove(path)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
