"""Example trainers for `replica_strategy`, driven by absl flags.

- `train_keras.py`: `model.fit` under a strategy chosen by `--strategy`.
- `train_custom_loop.py`: the same model with `strategy.run`, `reduce` and a distributed dataset.
- `legacy_multi_gpu_model.py`: the legacy `multi_gpu_model` call, saving through the template.

Shared pieces: `common.py` (flags, logging, devices, strategies), `data.py` (datasets, model),
`checkpoints.py` (per-epoch checkpoints that resume after a crash), `model_dir.py` (the output
directory, checked first and locked for the run). How to use them: docs/trainers.md.
"""
