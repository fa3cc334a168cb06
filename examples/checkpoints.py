"""Per-epoch checkpoints that survive a crash and refuse to load a damaged or foreign file.

A checkpoint is model + optimizer + epoch counter, written by `tf.train.Checkpoint.write` as
`ckpt-<epoch>.index` and `ckpt-<epoch>.data-*` (TensorFlow writes them under temporary names and
renames them). It counts as committed only once its manifest, `ckpt-<epoch>.manifest.json` with
the SHA-256 of each of its files, is in place (written to a temporary name, then renamed).

On restore, the committed checkpoints are found from the directory listing, never from
TensorFlow's `checkpoint` pointer file (which no manifest covers):

- the newest committed checkpoint is verified against its manifest and restored; a file that
  does not match raises `CorruptCheckpointError` naming the file: it is never loaded silently;
- intact files that do not fit the model (another `--hidden_units`, `--dataset`, ...) raise
  `ModelMismatchError`;
- a checkpoint without a manifest was being written when the process died: it is reported and
  skipped, and the previous committed checkpoint is used;
- a pointer that is damaged, missing or names another checkpoint is reported and rewritten.

Why not `tf.train.CheckpointManager`: it learns which checkpoints exist from the pointer file
alone (one damaged byte there and it forgets them all, then its saves overwrite them), and its
`max_to_keep` sweep deletes files through glob patterns built from the directory's path (a
`--model_dir` containing `*?[]` matches, and deleted, another run's checkpoints). Here every
file is named exactly, and old checkpoints are pruned by exact name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile

import tensorflow as tf
from absl import logging
from google.protobuf import text_format

# TensorFlow's own reader and writer of the pointer file; no public TF 2 API exposes them
# without a CheckpointManager (tf.compat.v1.train.update_checkpoint_state is deprecated).
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.training import checkpoint_state_pb2

POINTER_FILE = "checkpoint"
_PREFIX = "ckpt-"
_MANIFEST_SUFFIX = ".manifest.json"
# TensorFlow's file-system glob (tsl GetMatchingPaths) treats these as pattern characters.
_GLOB_CHARACTERS = frozenset("*?[\\")


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing or does not match the checksum its manifest recorded."""


class ModelMismatchError(ValueError):
    """The checkpoint is intact but was written for another model (other shapes or layers)."""


class EpochCheckpoints:
    """Saves and restores (model, optimizer, epoch) in `directory`, once per epoch.

    Args:
      directory: where the checkpoints go (created on the first save).
      model: a built Keras model.
      optimizer: a built optimizer (its slots must exist before `restore_latest`).
      max_to_keep: how many recent committed checkpoints to keep.
    """

    def __init__(self, directory: str, model, optimizer, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        self._max_to_keep = max_to_keep
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self._epoch)

    @property
    def pointer_path(self) -> str:
        """TensorFlow's pointer file, kept up to date for `tf.train.latest_checkpoint`."""
        return os.path.join(self.directory, POINTER_FILE)

    def save(self, epoch: int) -> str:
        """Saves and commits the state after `epoch` epochs (1-based); returns the prefix."""
        os.makedirs(self.directory, exist_ok=True)
        prefix = self._prefix(epoch)
        _remove_checkpoint(self.directory, epoch)  # Leftovers of an interrupted write.
        self._epoch.assign(epoch)
        self._checkpoint.write(prefix)
        _write_manifest(self.directory, epoch)
        committed = _committed_epochs(self.directory)
        kept = committed[-self._max_to_keep :]
        self._write_pointer(kept)
        for number in _checkpoint_numbers(self.directory) - set(kept):
            if number < epoch:
                _remove_checkpoint(self.directory, number)
        return prefix

    def restore_latest(self) -> tuple[int, str | None]:
        """Restores the newest committed checkpoint found on disk.

        Returns:
          (epochs already trained, checkpoint prefix), or (0, None) when there is none.

        Raises:
          CorruptCheckpointError: naming the file, when that checkpoint is damaged.
          ModelMismatchError: when its (intact) values do not fit the model.
        """
        committed = _committed_epochs(self.directory)
        newest = committed[-1] if committed else 0
        for number in sorted(_checkpoint_numbers(self.directory) - set(committed)):
            if number > newest:
                logging.warning(
                    "Skipping checkpoint %s: it has no manifest, so writing it was interrupted.",
                    self._prefix(number),
                )
        if not committed:
            return 0, None
        prefix = self._prefix(newest)
        verify(prefix)
        with _glob_free(prefix) as readable_prefix:
            try:
                self._checkpoint.read(readable_prefix).assert_existing_objects_matched()
            except (ValueError, AssertionError) as error:
                raise ModelMismatchError(
                    f"The model does not match the checkpoints in {self.directory}: {error} "
                    "Their files are intact (they match their manifests): they were written by "
                    "a run with another model (other --hidden_units, --dataset or "
                    "--image_size, or other code). Use a new --model_dir for this model, or "
                    "the flags of that run to resume it."
                ) from error
        self._check_pointer(prefix)
        return int(self._epoch.numpy()), prefix

    def _prefix(self, epoch: int) -> str:
        return os.path.join(self.directory, f"{_PREFIX}{epoch}")

    def _write_pointer(self, epochs: list[int]) -> None:
        names = [f"{_PREFIX}{number}" for number in epochs]
        checkpoint_management.update_checkpoint_state_internal(
            self.directory, names[-1], all_model_checkpoint_paths=names, save_relative_paths=True
        )

    def _check_pointer(self, prefix: str) -> None:
        """Reports (and rewrites) a pointer that does not name `prefix`; never trusts it."""
        problem = _pointer_problem(self.pointer_path, os.path.basename(prefix))
        if problem is None:
            return
        logging.warning(
            "TensorFlow's checkpoint pointer %s %s; ignoring it. Resuming from %s, the newest "
            "checkpoint on disk whose files match its manifest, and rewriting the pointer.",
            self.pointer_path,
            problem,
            prefix,
        )
        self._write_pointer(_committed_epochs(self.directory)[-self._max_to_keep :])


def verify(prefix: str) -> None:
    """Checks every file of checkpoint `prefix` against its manifest.

    Raises:
      CorruptCheckpointError: naming the first file that is missing or whose SHA-256 differs.
    """
    manifest_path = prefix + _MANIFEST_SUFFIX
    try:
        with open(manifest_path) as file:
            expected = json.load(file)
    except (OSError, ValueError) as error:
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


def _listing(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _files_of(directory: str, epoch: int) -> list[str]:
    """The exact names of checkpoint `epoch`'s files (its manifest and temporaries included)."""
    pattern = re.compile(
        rf"{_PREFIX}{epoch}(\.index|\.data-\d+-of-\d+|_temp|{re.escape(_MANIFEST_SUFFIX)}(\.tmp)?)"
    )
    return sorted(name for name in _listing(directory) if pattern.fullmatch(name))


def _checkpoint_numbers(directory: str) -> set[int]:
    """Every epoch with a file of a checkpoint in `directory`, committed or not."""
    pattern = re.compile(rf"{_PREFIX}(\d+)[._].*")
    return {int(match[1]) for match in map(pattern.fullmatch, _listing(directory)) if match}


def _committed_epochs(directory: str) -> list[int]:
    """The epochs whose manifest is in place, in increasing order."""
    pattern = re.compile(rf"{_PREFIX}(\d+){re.escape(_MANIFEST_SUFFIX)}")
    return sorted(int(match[1]) for match in map(pattern.fullmatch, _listing(directory)) if match)


def _write_manifest(directory: str, epoch: int) -> None:
    names = [name for name in _files_of(directory, epoch) if not name.endswith(("_temp", ".tmp"))]
    digests = {
        name: _sha256(os.path.join(directory, name))
        for name in names
        if not name.endswith(_MANIFEST_SUFFIX)
    }
    path = os.path.join(directory, f"{_PREFIX}{epoch}{_MANIFEST_SUFFIX}")
    with open(path + ".tmp", "w") as file:
        json.dump(digests, file, indent=2, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(path + ".tmp", path)


def _remove_checkpoint(directory: str, epoch: int) -> None:
    """Deletes checkpoint `epoch`, manifest first: an interrupted removal leaves it uncommitted."""
    names = sorted(_files_of(directory, epoch), key=lambda name: _MANIFEST_SUFFIX not in name)
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


@contextlib.contextmanager
def _glob_free(prefix: str):
    """`prefix`, or a path to it without glob characters, for TensorFlow's reader.

    TensorFlow's checkpoint reader looks for `<prefix>.index` with a glob (C++
    CheckpointReader), so in a directory named e.g. `run[1]` it finds nothing, or another
    directory's file. Reading through a symlink whose path has no pattern characters reads
    exactly these files.
    """
    if not _GLOB_CHARACTERS & set(prefix):
        yield prefix
        return
    with tempfile.TemporaryDirectory(prefix="checkpoint_alias_") as alias_parent:
        alias = os.path.join(alias_parent, "checkpoints")
        os.symlink(os.path.dirname(prefix), alias)
        yield os.path.join(alias, os.path.basename(prefix))


def _pointer_problem(path: str, expected_name: str) -> str | None:
    """What is wrong with the pointer file at `path`, or None if it names `expected_name`."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
        state = text_format.Parse(text, checkpoint_state_pb2.CheckpointState())
    except FileNotFoundError:
        return "is missing"
    except (OSError, UnicodeDecodeError, text_format.ParseError) as error:
        return f"is damaged ({type(error).__name__}: {error})"
    named = os.path.basename(state.model_checkpoint_path)
    if named != expected_name:
        return f"names {named or 'no checkpoint'}"
    return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
