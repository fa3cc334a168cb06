"""Peak memory of a large MLP under one contestant, measured in a fresh process.

Peak resident memory only grows, so every configuration runs in its own child process:

    python -m benchmarks.memory_probe --contestant=ReplicaStrategy --device_count=2

The child configures N + 1 logical CPUs: the host "/cpu:0" (ReplicaStrategy's parameter device)
and the replicas "/cpu:1" ... "/cpu:N". It builds `layers` Dense layers of `width` x `width`
under the strategy, trains two steps with Adam, and prints one JSON line: parameters, bytes held
in its distinct underlying variables (weights and Adam's two slots; a MirroredVariable counts
once per replica) in all and per device, and resident memory after importing TensorFlow and at
its peak (VmRSS, VmHWM).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import tensorflow as tf
from absl import app, flags

from benchmarks import contestants as contestants_lib
from replica_strategy import logical_devices

_CONTESTANT = flags.DEFINE_string("contestant", "ReplicaStrategy", "Strategy name.")
_DEVICE_COUNT = flags.DEFINE_integer("device_count", 1, "Logical CPUs (replicas).")
_WIDTH = flags.DEFINE_integer("width", 4096, "Units of each Dense layer.")
_LAYERS = flags.DEFINE_integer("layers", 3, "Dense layers of width x width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Global batch of the two train steps.")


def _memory_bytes(field: str) -> int:
    """A field of /proc/self/status in bytes: "VmHWM" (peak resident) or "VmRSS" (resident).

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries the parent's peak across fork and exec
    into it, so a child of a large benchmark process would report the parent's peak.
    """
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # Reported in kB.
    raise RuntimeError(f"/proc/self/status has no {field} field.")


def probe(contestant_name: str, device_count: int, width: int, layers: int, batch_size: int):
    """Builds and trains the MLP in this process; call it only in a fresh process.

    Returns:
        A dict: parameters, variable_bytes, variable_bytes_per_device, rss_after_import_bytes,
        peak_rss_bytes.
    """
    logical_devices.split_cpu(device_count + 1)
    rss_after_import = _memory_bytes("VmRSS")
    contestant = contestants_lib.Contestant(contestant_name, device_count)
    replicas = [f"/cpu:{index}" for index in range(1, device_count + 1)]
    strategy = contestants_lib.make_strategy(contestant, replicas)
    keras = tf.keras
    with contestants_lib.recording_variables() as created, contestants_lib.scope(strategy):
        model = keras.Sequential(
            [keras.Input((width,))] + [keras.layers.Dense(width) for _ in range(layers)]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
        features = tf.random.normal((batch_size, width))
        dataset = tf.data.Dataset.from_tensors((features, features)).repeat()
        model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)
    return {
        "parameters": int(model.count_params()),
        "variable_bytes": contestants_lib.variable_bytes(created),
        "variable_bytes_per_device": contestants_lib.variable_bytes_per_device(created),
        "rss_after_import_bytes": rss_after_import,
        "peak_rss_bytes": _memory_bytes("VmHWM"),
    }


def main(argv: Sequence[str]) -> None:
    del argv  # Unused.
    result = probe(
        _CONTESTANT.value, _DEVICE_COUNT.value, _WIDTH.value, _LAYERS.value, _BATCH_SIZE.value
    )
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
