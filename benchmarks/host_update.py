"""What the optimizer update costs on the host CPU: Keras 3's Adam and `FusedAdam`, per million
parameters.

With `ReplicaStrategy`'s weights on the host (either mode), the host runs the optimizer update
once per step, so its speed is an input of the GPU model (benchmarks/gpu_model/). Measured here on
/cpu:0, alternately so machine noise hits all alike, each `apply_gradients` inside a
`tf.function` as `fit` calls it, on Keras variables of the same sizes:
- `keras.optimizers.Adam`: in the TensorFlow backend a chain of element-wise ops (subtract,
  multiply, square, sqrt, divide, assign_add, ...), each a full pass over memory, about 30
  parameter-sized passes by count;
- `replica_strategy.FusedAdam`: the same Adam with each dense update one TensorFlow
  `ResourceApplyAdam` kernel, which reads weights, gradients and both slots and writes weights
  and slots in one pass: 7 parameter-sized passes;
- that kernel called bare on plain `tf.Variable`s, with nothing of Keras around it. FusedAdam /
  kernel near 1 says FusedAdam costs the kernel's 7 passes and nothing more per parameter (its
  own ops are a few scalars per variable and step).
All are bound by memory traffic, not arithmetic, so their time ratios carry over to another
host: the GPU model charges FusedAdam 7 passes at that host's bandwidth and Keras 3's Adam the
measured Keras / FusedAdam ratio times that. Times are per update; the minimum over repetitions
is the least disturbed on a shared machine, the ratios are medians of the ratios within each
repetition.

    python -m benchmarks.host_update                      # 1M, 10M, 50M parameters
    python -m benchmarks.host_update --sizes=1000000 --repetitions=3
"""

from __future__ import annotations

import datetime
import json
import statistics
import time
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf
from absl import app, flags

import replica_strategy
from benchmarks import machine

_VARIABLE_SIZE = 1_000_000  # parameters per variable: a 50M model is 50 variables
FUSED_ADAM_PASSES = 7  # ResourceApplyAdam reads weights, gradients, m, v; writes weights, m, v
_HOST = "/cpu:0"


def _interleaved_seconds(functions: dict[str, Callable], repetitions: int) -> dict[str, list]:
    """Times each function `repetitions` times, alternating between them.

    Returns:
        {name: [seconds of each call, in repetition order]}.
    """
    for function in functions.values():
        function()  # Traces and warms the caches up.
    seconds = {name: [] for name in functions}
    for _ in range(repetitions):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _timings(seconds: list[float]) -> dict:
    return {"min_ms": 1e3 * min(seconds), "median_ms": 1e3 * statistics.median(seconds)}


def _paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over repetitions of numerator / denominator within each repetition."""
    return statistics.median(
        mine / theirs for mine, theirs in zip(numerator, denominator, strict=True)
    )


def adam_update(parameters: int, repetitions: int) -> dict:
    """Keras 3's Adam, `FusedAdam` and the bare fused kernel over `parameters` float32
    parameters.

    Returns:
        {"parameters", "keras", "fused", "kernel": timings {"min_ms", "median_ms"} per update,
        "keras_over_fused", "fused_over_kernel": median paired time ratios}.
    """

    sizes = [_VARIABLE_SIZE] * (parameters // _VARIABLE_SIZE) or [parameters]
    with tf.device(_HOST):
        gradients = [tf.random.normal((size,)) * 1e-3 for size in sizes]

    def optimizer_step(optimizer: keras.optimizers.Optimizer) -> Callable:
        with tf.device(_HOST):
            variables = [keras.Variable(tf.random.normal((size,))) for size in sizes]
            optimizer.build(variables)

        @tf.function
        def step():
            with tf.device(_HOST):  # The element-wise ops too, on a machine with a GPU.
                optimizer.apply_gradients(zip(gradients, variables, strict=True))

        return step

    with tf.device(_HOST):
        # Plain TensorFlow variables and slots of the same sizes for the bare kernel.
        bare = [tuple(tf.Variable(tf.zeros((size,))) for _ in range(3)) for size in sizes]

    @tf.function
    def kernel_step():
        for (variable, m, v), gradient in zip(bare, gradients, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=tf.constant(0.9),
                beta2_power=tf.constant(0.999),
                lr=tf.constant(1e-3),
                beta1=tf.constant(0.9),
                beta2=tf.constant(0.999),
                epsilon=tf.constant(1e-7),
                grad=gradient,
            )

    seconds = _interleaved_seconds(
        {
            "kernel": kernel_step,
            "fused": optimizer_step(replica_strategy.FusedAdam(1e-3)),
            "keras": optimizer_step(keras.optimizers.Adam(1e-3)),
        },
        repetitions,
    )
    return {
        "parameters": parameters,
        **{name: _timings(values) for name, values in seconds.items()},
        "keras_over_fused": _paired_ratio(seconds["keras"], seconds["fused"]),
        "fused_over_kernel": _paired_ratio(seconds["fused"], seconds["kernel"]),
    }


def measure(sizes: Sequence[int], repetitions: int) -> dict:
    """Adam at every size (see `adam_update`).

    Returns:
        {"date", "machine", "adam": [adam_update results]}.
    """
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine.description(),
        "adam": [adam_update(size, repetitions) for size in sizes],
    }


def keras_adam_passes(results: dict) -> float:
    """Keras 3's Adam at the largest size in parameter-sized passes over memory: FusedAdam's 7
    times the measured Keras / FusedAdam time ratio. The input the GPU model scales by its
    host's bandwidth."""
    largest = max(results["adam"], key=lambda row: row["parameters"])
    return FUSED_ADAM_PASSES * largest["keras_over_fused"]


def markdown(results: dict) -> str:
    """The Adam table: ms per update and per million parameters, and the paired ratios."""
    lines = [
        "| Parameters | Keras 3 Adam, ms (min / median) | per 1M params, ms | FusedAdam, ms "
        "(min / median) | per 1M params, ms | Keras 3 / FusedAdam, paired median | FusedAdam / "
        "bare ResourceApplyAdam, paired median |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["adam"]:
        millions = row["parameters"] / 1e6
        cells = []
        for kind in ("keras", "fused"):
            timings = row[kind]
            cells += [
                f"{timings['min_ms']:.1f} / {timings['median_ms']:.1f}",
                f"{timings['min_ms'] / millions:.2f}",
            ]
        cells += [f"{row['keras_over_fused']:.2f}", f"{row['fused_over_kernel']:.2f}"]
        lines.append(f"| {row['parameters']:,} | " + " | ".join(cells) + " |")
    date = f"; measured {results['date']}" if "date" in results else ""
    lines += [
        "",
        f"Machine: {results['machine']['cores']} cores, {results['machine']['cpu_model']}, "
        f"shared{date}. FusedAdam is `replica_strategy.FusedAdam`, one `ResourceApplyAdam` "
        "kernel per variable, which streams 7 parameter-sized arrays; the last column is its "
        "time over that kernel's, called bare. Keras 3's Adam costs "
        f"{keras_adam_passes(results):.1f} such passes at the largest size: the figure the GPU "
        "model (scaling_model.py) scales by its host's memory bandwidth.",
    ]
    return "\n".join(lines)


def define_flags() -> None:
    """The command line's flags; defined only when run as a script, so importing this module
    next to another benchmark script defines no clashing flags."""
    flags.DEFINE_list("sizes", ["1000000", "10000000", "50000000"], "Parameter counts.")
    flags.DEFINE_integer("repetitions", 5, "Timed updates per size.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
    results = measure([int(size) for size in flags.FLAGS.sizes], flags.FLAGS.repetitions)
    print(markdown(results))
    print(json.dumps(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
