"""A model of data-parallel step time and GPU memory on N GPUs, by where the weights live.

No GPU is available where this project is built, so this predicts rather than measures. One
concern per module, each importing only those above it:

    hardware.py    facts with their sources (SOURCES.md): reference models, bandwidths
    costs.py       bytes into milliseconds: links, host sums and updates; bytes per step
    step_time.py   the step of each placement
    scaling.py     every placement over GPU counts: throughput, efficiency, break-even
    memory.py      weights, gradients and optimizer slots per device
    mixed_pair.py  one A100 beside one V100, split evenly or by speed
    markdown.py    the tables, and the generated block of benchmarks/SCALING.md
    charts.py      the plots (matplotlib)

`benchmarks/scaling_model.py` is its command line.
"""
