"""Loads a `.keras` file in a fresh Python process and trains it on: what another machine sees.

`load_and_train(path, ...)` runs a new interpreter that loads the file with
`keras.models.load_model`, records the loaded weights and optimizer state, fits one epoch of the
given data, and records the weights and state again. With `keras_alone=True` the process cannot
import `replica_strategy` (its `sys.modules` entry is None, so any import of it raises), as where
only Keras is installed; otherwise it imports `replica_strategy` first, and nothing else of ours.
"""

import json
import os
import subprocess
import sys

import numpy as np

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import json
import sys

keras_alone, path, data_path, output_path, custom_objects = sys.argv[1:]
if keras_alone == "1":
    sys.modules["replica_strategy"] = None  # `import replica_strategy` raises ImportError.
else:
    import replica_strategy  # noqa: F401

import keras
import numpy as np

custom_objects = {
    name: getattr(keras.optimizers, target) for name, target in json.loads(custom_objects).items()
}
report = {}
try:
    keras.models.load_model(path)
    report["plain_load_error"] = None
except TypeError as error:
    report["plain_load_error"] = str(error)
model = keras.models.load_model(path, custom_objects=custom_objects)
optimizer_class = type(model.optimizer)
report["optimizer_class"] = f"{optimizer_class.__module__}.{optimizer_class.__qualname__}"
arrays = {}
for when in ("loaded", "trained"):
    if when == "trained":
        data = np.load(data_path)
        model.fit(
            data["x"], data["y"], batch_size=int(data["batch_size"]), shuffle=False, verbose=0
        )
    for index, weight in enumerate(model.get_weights()):
        arrays[f"{when}/weight/{index}"] = weight
    for index, variable in enumerate(model.optimizer.variables):
        arrays[f"{when}/optimizer/{index}"] = np.asarray(variable.numpy())
np.savez(output_path, **arrays)
report["imported"] = sorted(
    name for name, module in sys.modules.items()
    if module is not None and name.split(".")[0] in ("replica_strategy", "examples")
)
print(json.dumps(report))
"""


def load_and_train(path, x, y, batch_size, scratch_dir, *, keras_alone, custom_objects=None):
    """Loads `path` in a fresh process, then fits one epoch of (x, y) in `batch_size` batches.

    Args:
      path: the `.keras` file.
      x, y, batch_size: the epoch to train after loading (no shuffling).
      scratch_dir: where the data and the results pass between the processes.
      keras_alone: whether the process is barred from importing `replica_strategy`.
      custom_objects: {name in the file: name of a `keras.optimizers` class} for `load_model`.

    Returns:
      (report, arrays): report["optimizer_class"] is the loaded optimizer's class,
      report["plain_load_error"] the TypeError message of `load_model(path)` without
      `custom_objects` (None if it loaded), report["imported"] the modules of ours the process
      imported; arrays["loaded"|"trained"]["weight"|"optimizer"] are lists of arrays, in
      `get_weights()` and `optimizer.variables` order.
    """
    data_path = os.path.join(scratch_dir, "epoch.npz")
    output_path = os.path.join(scratch_dir, "arrays.npz")
    np.savez(data_path, x=x, y=y, batch_size=batch_size)
    arguments = [
        "1" if keras_alone else "0",
        path,
        data_path,
        output_path,
        json.dumps(custom_objects or {}),
    ]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=scratch_dir,
        env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    if result.returncode != 0:
        raise AssertionError(f"The fresh process failed:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(output_path) as saved:
        arrays = {
            when: {
                kind: [
                    saved[f"{when}/{kind}/{index}"]
                    for index in range(
                        sum(1 for key in saved.files if key.startswith(f"{when}/{kind}/"))
                    )
                ]
                for kind in ("weight", "optimizer")
            }
            for when in ("loaded", "trained")
        }
    return report, arrays
