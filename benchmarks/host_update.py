"""What the optimizer update costs on the host CPU: Keras 3's Adam, per million parameters.

With `ReplicaStrategy`'s weights on the host (either mode), the host runs the optimizer update
once per step, so its speed is an input of the GPU model (scaling_model.py). Measured here,
alternately so machine noise hits both alike:
- Keras 3's `Adam.apply_gradients` inside a `tf.function`, as `fit` calls it. In the TensorFlow
  backend it is a chain of element-wise ops (subtract, multiply, square, sqrt, divide,
  assign_add, ...), each a full pass over memory, about 30 parameter-sized passes by count;
- TensorFlow's fused `ResourceApplyAdam` kernel on variables of the same sizes (what tf_keras'
  Adam runs): one pass that reads weights, gradients and both slots and writes weights and
  slots, 7 parameter-sized passes.
Both are bound by memory traffic, not arithmetic, so their time ratio carries over to another
host: the GPU model charges the fused kernel its 7 passes at that host's bandwidth and Keras 3's
Adam the measured ratio times that. Times are per update; the minimum over repetitions is the
least disturbed on a shared machine.

    python -m benchmarks.host_update                      # 1M, 10M, 50M parameters
    python -m benchmarks.host_update --sizes=1000000 --repetitions=3
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence

from absl import app, flags

_VARIABLE_SIZE = 1_000_000  # parameters per variable: a 50M model is 50 variables
FUSED_ADAM_PASSES = 7  # ResourceApplyAdam reads weights, gradients, m, v; writes weights, m, v


def _interleaved_timings(functions: dict, repetitions: int) -> dict:
    """Times each function `repetitions` times, alternating between them.

    Returns:
        {name: {"min_ms", "median_ms"}} and "ratios": {name: median over repetitions of its
        time / the first function's time in the same repetition}.
    """
    for function in functions.values():
        function()  # Traces and warms the caches up.
    seconds = {name: [] for name in functions}
    for _ in range(repetitions):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    first = next(iter(functions))
    timings = {
        name: {"min_ms": 1e3 * min(values), "median_ms": 1e3 * statistics.median(values)}
        for name, values in seconds.items()
    }
    timings["ratios"] = {
        name: statistics.median(
            mine / theirs for mine, theirs in zip(values, seconds[first], strict=True)
        )
        for name, values in seconds.items()
    }
    return timings


def adam_update(parameters: int, repetitions: int) -> dict:
    """Keras 3's and the fused Adam update over `parameters` float32 parameters.

    Returns:
        {"parameters", "fused": timings, "keras": timings, "keras_over_fused": median paired
        time ratio}, timings {"min_ms", "median_ms"} per update.
    """
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    sizes = [_VARIABLE_SIZE] * (parameters // _VARIABLE_SIZE) or [parameters]
    with tf.device("/cpu:0"):
        variables = [keras.Variable(tf.random.normal((size,))) for size in sizes]
        gradients = [tf.random.normal((size,)) * 1e-3 for size in sizes]
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(variables)
        # Plain TensorFlow variables and slots of the same sizes for the fused kernel.
        fused = [tuple(tf.Variable(tf.zeros((size,))) for _ in range(3)) for size in sizes]

    @tf.function
    def keras_step():
        optimizer.apply_gradients(zip(gradients, variables, strict=True))

    @tf.function
    def fused_step():
        for (variable, m, v), gradient in zip(fused, gradients, strict=True):
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

    timings = _interleaved_timings({"fused": fused_step, "keras": keras_step}, repetitions)
    return {
        "parameters": parameters,
        "fused": timings["fused"],
        "keras": timings["keras"],
        "keras_over_fused": timings["ratios"]["keras"],
    }


def measure(sizes: Sequence[int], repetitions: int) -> dict:
    """Adam at every size (see `adam_update`).

    Returns:
        {"machine", "adam": [adam_update results]}.
    """
    import os  # noqa: PLC0415

    from benchmarks import suite  # noqa: PLC0415  (the machine description)

    return {
        "machine": {"cores": os.cpu_count(), "cpu_model": suite.cpu_model()},
        "adam": [adam_update(size, repetitions) for size in sizes],
    }


def keras_adam_passes(results: dict) -> float:
    """Keras 3's Adam at the largest size in parameter-sized passes over memory: the fused
    kernel's 7 times the measured time ratio. The input the GPU model scales by its host's
    bandwidth."""
    largest = max(results["adam"], key=lambda row: row["parameters"])
    return FUSED_ADAM_PASSES * largest["keras_over_fused"]


def markdown(results: dict) -> str:
    """The Adam table (ms per update and per million parameters) and the host-sum table."""
    lines = [
        "| Parameters | Keras 3 Adam, ms (min / median) | per 1M params, ms | fused "
        "ResourceApplyAdam, ms (min / median) | per 1M params, ms | Keras 3 / fused, paired "
        "median |",
        "|---|---|---|---|---|---|",
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
        cells.append(f"{row['keras_over_fused']:.2f}")
        lines.append(f"| {row['parameters']:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Machine: {results['machine']['cores']} cores, {results['machine']['cpu_model']}, "
        "shared. As the fused kernel streams 7 parameter-sized arrays, Keras 3's Adam costs "
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
