"""The trainers' shared functions that code outside `examples/` (the tests) calls, by one name.

Each lives in a module of its own, which the trainers import directly:

- `trainer_flags`: the flags and their absl validators; `--devices` and `--split` parsed.
- `local_devices`: `--devices` turned into this machine's device names.
- `describe`: the first lines of a run (strategy, devices, placement, batch split).
- `optimizers`: `--optimizer`, and a final model Keras alone loads.
- `outputs`: where a run resumes and what it writes to `--model_dir`.
- `program`: a trainer as a command-line program (`app.run`, logging, usage errors).
"""

from examples.describe import describe_strategy
from examples.local_devices import configure_devices
from examples.trainer_flags import parse_devices, parse_split, replica_options

__all__ = [
    "configure_devices",
    "describe_strategy",
    "parse_devices",
    "parse_split",
    "replica_options",
]
