"""The trainers' shared pieces under one name, for code outside `examples/` (tests, notebooks).

Each lives in a module of its own, which the trainers import directly:

- `trainer_flags`: the flags and their absl validators; `--devices` and `--split` parsed.
- `local_devices`: `--devices` turned into this machine's device names.
- `describe`: the first lines of a run (strategy, devices, placement, batch split).
- `optimizers`: `--optimizer`, and a final model Keras alone loads.
- `outputs`: where a run resumes and what it writes to `--model_dir`.
- `program`: a trainer as a command-line program (`app.run`, logging, usage errors).
"""

from examples.describe import describe_split, describe_strategy
from examples.local_devices import configure_devices, default_devices
from examples.optimizers import make_optimizer, save_model
from examples.outputs import TrainResult
from examples.trainer_flags import format_split, parse_devices, parse_split, replica_options

__all__ = [
    "TrainResult",
    "configure_devices",
    "default_devices",
    "describe_split",
    "describe_strategy",
    "format_split",
    "make_optimizer",
    "parse_devices",
    "parse_split",
    "replica_options",
    "save_model",
]
