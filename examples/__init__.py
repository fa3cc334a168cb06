"""Example trainers for `replica_strategy`, driven by absl flags.

- `train_keras.py`: `model.fit` under a strategy chosen by `--strategy`.
- `train_custom_loop.py`: the same model with `strategy.run`, `reduce` and a distributed dataset.
- `legacy_multi_gpu_model.py`: the legacy `multi_gpu_model` call, saving through the template.

What they share, one concern a module: `trainer_flags.py` (the flags, checked as they are
parsed), `local_devices.py` (`--devices` into device names), `data.py` (datasets, model),
`optimizers.py` (`--optimizer`), `describe.py` (the first lines of a run), `checkpoints.py`
(per-epoch checkpoints that resume after a crash), `model_dir.py` (the output directory,
checked first and locked for the run), `outputs.py` (where a run resumes, what it writes),
`program.py` (`app.run` with short usage errors). How to use them: docs/trainers.md.
"""
