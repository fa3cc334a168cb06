"""A trainer's output directory: checked and created before any work, held by one run at a time.

    with model_dir.exclusive("runs/train_keras"):
        ...  # Read checkpoints, train, write.

`exclusive` creates the directory (a path that is a file, or that cannot be written, is an
`app.UsageError` naming `--model_dir`, raised before a model is built) and takes an exclusive
`fcntl.flock` on `<directory>/trainer.lock` for the `with` block. The lock file records the
holder's PID and host. A second trainer on the same directory gets an `app.UsageError` naming
the directory and that PID. The kernel drops a flock when its process dies, however it dies, so
a killed trainer never blocks the next one; a run that ends (even with an error) also clears
its PID from the file, so a PID found there by the next holder belongs to a run that was killed:
the takeover is logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket

from absl import app, logging

LOCK_FILE = "trainer.lock"


class ModelDirError(app.UsageError):
    """`--model_dir` cannot be used: not a directory, not writable, or in use by another run."""


@contextlib.contextmanager
def exclusive(directory: str):
    """Creates `directory` if needed and holds its trainer lock for the `with` block.

    Raises:
      ModelDirError: when `directory` is a file, cannot be created or written, or another
        process holds its lock (the message names that process's PID).
    """
    _create(directory)
    path = os.path.join(directory, LOCK_FILE)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ModelDirError(
            f"--model_dir {directory} is not writable ({error.strerror}: {path}). Choose a "
            f"directory you can write. Received: --model_dir={directory}"
        ) from error
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelDirError(
                f"--model_dir {os.path.abspath(directory)} is in use by another trainer "
                f"({_describe(_read_holder(descriptor))}, lock file {path}). Wait for it to "
                "finish, stop it, or choose another --model_dir."
            ) from None
        _hold(descriptor, path)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # Ended, not killed: nothing for the next run to report.
    finally:
        os.close(descriptor)  # Releases the flock.


def _create(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ModelDirError(
            f"--model_dir {directory} is a file, not a directory. Choose a directory (it is "
            f"created if missing). Received: --model_dir={directory}"
        )
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise ModelDirError(
            f"--model_dir {directory} cannot be created ({error.strerror}: "
            f"{error.filename}). Received: --model_dir={directory}"
        ) from error


def _hold(descriptor: int, path: str) -> None:
    """Records this process as the holder, after logging a holder that was killed."""
    previous = _read_holder(descriptor)
    if previous is not None:
        logging.warning(
            "Took over the stale lock %s of %s, which ended without releasing it (killed?).",
            path,
            _describe(previous),
        )
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, record + b"\n", 0)


def _read_holder(descriptor: int) -> dict | None:
    text = os.pread(descriptor, 4096, 0)
    if not text.strip():
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {"pid": None, "host": None}
    return holder if isinstance(holder, dict) else {"pid": None, "host": None}


def _describe(holder: dict | None) -> str:
    if holder is None or holder.get("pid") is None:
        return "PID unknown: the lock file names none yet"
    host = holder.get("host")
    return f"PID {holder['pid']}" + (f" on host {host}" if host else "")
