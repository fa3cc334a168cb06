"""Invariants of benchmarks/gpu_model/, the step-time model behind benchmarks/SCALING.md.

Run from the repository root: `python -m pytest tests/benchmark_tools/scaling_model_test.py` or
`python tests/benchmark_tools/scaling_model_test.py`. No TensorFlow needed.
"""

import dataclasses
import math
import pathlib

from absl.testing import absltest, parameterized

from benchmarks.gpu_model import costs, memory, mixed_pair, step_time
from benchmarks.gpu_model import hardware as facts
from benchmarks.gpu_model import markdown as rendering
from benchmarks.gpu_model import scaling as gpu_scaling

_REPOSITORY = pathlib.Path(__file__).resolve().parents[2]


_HARDWARE = facts.Hardware()
_REPLICA_COUNTS = gpu_scaling.DEFAULT_REPLICA_COUNTS


def _by_case(hardware=_HARDWARE):
    """Per (model, precision, scaling) case: {(placement, replicas): point}."""
    for model in facts.MODELS:
        for precision in facts.PRECISIONS:
            for scaling in gpu_scaling.default_scalings():
                points = gpu_scaling.scaling_points(
                    hardware, model, precision, scaling, _REPLICA_COUNTS
                )
                yield {(point.placement, point.replicas): point for point in points}


def _all_points(hardware=_HARDWARE):
    """Every (model, precision, scaling) case's rows at the default GPU counts."""
    for model in facts.MODELS:
        for precision in facts.PRECISIONS:
            for scaling in gpu_scaling.default_scalings():
                yield from gpu_scaling.scaling_points(
                    hardware, model, precision, scaling, _REPLICA_COUNTS
                )


class InputsTest(absltest.TestCase):
    def test_measured_points_are_reproduced_exactly(self):
        # Interpolation must return the H200 figures (gpu_model/SOURCES.md) at the points it measured.
        for model in facts.MODELS:
            for precision, points in model.step_milliseconds.items():
                for batch, milliseconds in points:
                    self.assertAlmostEqual(
                        gpu_scaling.replica_compute_milliseconds(model, precision, batch),
                        milliseconds,
                    )
        reference_bytes = _HARDWARE.host_sum_parameter_count * facts.FLOAT32_BYTES
        for replicas, milliseconds in _HARDWARE.host_sum_milliseconds:
            self.assertAlmostEqual(
                costs.host_sum_milliseconds(_HARDWARE, replicas, reference_bytes),
                milliseconds,
            )

    def test_one_gradient_copy_needs_no_sum(self):
        self.assertEqual(costs.host_sum_milliseconds(_HARDWARE, 1, 1e9), 0.0)

    def test_strong_scaling_gives_the_busiest_gpu_the_larger_share(self):
        scaling = gpu_scaling.Scaling("strong", 10)
        self.assertEqual(scaling.per_replica_batch(4), 3)
        self.assertEqual(scaling.global_batch(4), 10)


class StepTimeTest(parameterized.TestCase):
    def test_one_gpu_with_host_weights_is_slower_than_its_compute(self):
        # Weights on the host still cross PCIe and are updated by the host with a single GPU.
        for point in _all_points():
            if point.replicas == 1 and point.placement.startswith("cpu"):
                self.assertGreater(point.step.serial_ms, point.step.compute_ms)
                self.assertGreaterEqual(point.step.overlapped_ms, point.step.compute_ms)

    def test_one_gpu_holding_its_weights_is_the_baseline(self):  # up to Adam's extra passes
        for point in _all_points():
            if point.replicas == 1 and point.placement in ("gpu0", "mirrored"):
                # Nothing moves; only Adam's passes over HBM beyond the measured SGD's are added.
                self.assertAlmostEqual(point.step.transfer_ms, 0.0)
                self.assertAlmostEqual(point.step.reduce_ms, 0.0)
                self.assertLessEqual(point.efficiency, 1.0)

    def test_mirror_weights_moves_less_than_the_default_and_delaying_the_update_helps(self):
        for placement_points in _by_case():
            for replicas in _REPLICA_COUNTS:
                default = placement_points[("cpu_pinned", replicas)]
                mirror = placement_points[("mirror_weights", replicas)]
                delayed = placement_points[("mirror_weights_delayed", replicas)]
                # One GPU: both move P each way and update on the host, but mirror_weights sends
                # the new weights inside the host's pipeline, the default reads them serially at
                # the next step; more: the default sends N copies through the host and sums them.
                if replicas == 1:
                    self.assertLessEqual(mirror.step.serial_ms, default.step.serial_ms)
                else:
                    self.assertLess(mirror.step.serial_ms, default.step.serial_ms)
                self.assertLessEqual(delayed.step.serial_ms, mirror.step.serial_ms + 1e-9)
                self.assertGreaterEqual(delayed.step.serial_ms, delayed.step.compute_ms)

    def test_a_fused_host_update_is_faster(self):
        fused = dataclasses.replace(_HARDWARE, host_optimizer="fused")
        keras_adam = dataclasses.replace(_HARDWARE, host_optimizer="keras")
        self.assertLess(
            costs.host_update_milliseconds(fused, 10**6),
            costs.host_update_milliseconds(keras_adam, 10**6),
        )
        for placement_points in _by_case():
            for replicas in _REPLICA_COUNTS:
                self.assertLess(
                    placement_points[("mirror_weights", replicas)].step.serial_ms,
                    placement_points[("mirror_weights_keras_adam", replicas)].step.serial_ms,
                )

    def test_break_even_bandwidth_gives_the_fraction(self):
        # At the returned host bandwidth, serial mirror_weights runs at 90% of Mirrored.
        model = facts.MODELS[0]
        gbps = gpu_scaling.break_even_host_gbps(_HARDWARE, model, "fp32", 128, 8, 0.9)
        # The host streaming bandwidth is the slope of the sums: scale the sums to reach `gbps`.
        factor = costs.host_streaming_gbps(_HARDWARE) / gbps
        sums = tuple((count, ms * factor) for count, ms in _HARDWARE.host_sum_milliseconds)
        hardware = dataclasses.replace(_HARDWARE, host_sum_milliseconds=sums)
        scaling = gpu_scaling.Scaling("weak", 128)
        points = {
            point.placement: point
            for point in gpu_scaling.scaling_points(hardware, model, "fp32", scaling, [8])
        }
        self.assertAlmostEqual(
            points["mirror_weights"].samples_per_second / points["mirrored"].samples_per_second,
            0.9,
        )

    def test_efficiency_is_positive_and_at_most_one(self):
        for point in _all_points():
            self.assertGreater(point.efficiency, 0.0)
            self.assertLessEqual(point.efficiency, point.overlapped_efficiency + 1e-12)
            self.assertLessEqual(point.overlapped_efficiency, 1.0 + 1e-12)

    @parameterized.named_parameters(
        ("host_to_device_pinned", "host_to_device_pinned_gbps"),
        ("device_to_host_pinned", "device_to_host_pinned_gbps"),
        ("host_to_device_pageable", "host_to_device_pageable_gbps"),
        ("device_to_host_pageable", "device_to_host_pageable_gbps"),
        ("nvlink", "nvlink_gbps_per_direction"),
        ("gpu_memory", "gpu_memory_gbps"),
    )
    def test_more_bandwidth_never_slows_a_step(self, field):
        faster = dataclasses.replace(_HARDWARE, **{field: 2 * getattr(_HARDWARE, field)})
        some_step_got_faster = False
        for slow, fast in zip(_all_points(), _all_points(faster), strict=True):
            self.assertLessEqual(fast.step.serial_ms, slow.step.serial_ms)
            self.assertLessEqual(fast.step.overlapped_ms, slow.step.overlapped_ms)
            some_step_got_faster |= fast.step.serial_ms < slow.step.serial_ms
        self.assertTrue(some_step_got_faster, f"{field} is never used")

    def test_faster_host_sums_never_slow_a_step(self):
        halved = tuple((count, ms / 2) for count, ms in _HARDWARE.host_sum_milliseconds)
        faster = dataclasses.replace(_HARDWARE, host_sum_milliseconds=halved)
        for slow, fast in zip(_all_points(), _all_points(faster), strict=True):
            self.assertLessEqual(fast.step.serial_ms, slow.step.serial_ms)

    def test_sharing_a_pcie_uplink_slows_host_weights(self):
        shared = dataclasses.replace(_HARDWARE, gpus_per_pcie_uplink=2)
        private = dataclasses.replace(_HARDWARE, gpus_per_pcie_uplink=1)
        gradient_bytes = 1e8
        for placement in ("cpu_pinned", "cpu_pageable"):
            slow = step_time.step_time(placement, shared, 25_000_000, 8, 10.0, gradient_bytes)
            fast = step_time.step_time(placement, private, 25_000_000, 8, 10.0, gradient_bytes)
            self.assertLessEqual(fast.serial_ms, slow.serial_ms)

    def test_bfloat16_gradients_shorten_only_bf16_steps(self):
        self.assertEqual(step_time.gradient_bytes_per_parameter("bf16", "bfloat16"), 2)
        self.assertEqual(step_time.gradient_bytes_per_parameter("bf16", "float32"), 4)
        self.assertEqual(step_time.gradient_bytes_per_parameter("fp32", "bfloat16"), 4)

    def test_unknown_placement_raises(self):
        with self.assertRaisesRegex(ValueError, "Unknown placement.*'tpu'"):
            step_time.step_time("tpu", _HARDWARE, 1, 1, 1.0, 4.0)


def _flow_shop_makespan(stage_totals, fractions):
    """The exact makespan of variables taking `fractions` of each stage, in the given order."""
    finished = [0.0] * len(stage_totals)  # when each stage finished its latest variable
    for fraction in fractions:
        ready = 0.0
        for stage, total in enumerate(stage_totals):
            ready = max(ready, finished[stage]) + fraction * total
            finished[stage] = ready
    return finished[-1]


class PipelineTest(parameterized.TestCase):
    @parameterized.parameters(
        ((2.0, 12.1, 2.0, 1.9), (0.25, 0.25, 0.25, 0.25)),
        ((2.0, 12.1, 2.0, 1.9), (0.05, 0.4, 0.05, 0.3, 0.2)),
        ((5.0, 1.0, 5.0), (0.1,) * 10),
        ((3.0, 3.0, 3.0), (0.7, 0.1, 0.1, 0.1)),
        ((1.0, 9.0), (1.0,)),
    )
    def test_bound_holds_for_any_order_of_variables(self, stages, fractions):
        bound = costs.pipelined_milliseconds(stages, max(fractions))
        for order in (fractions, tuple(reversed(fractions)), tuple(sorted(fractions))):
            makespan = _flow_shop_makespan(stages, order)
            self.assertLessEqual(makespan, bound + 1e-9)
        self.assertGreaterEqual(bound, max(stages))
        self.assertLessEqual(bound, sum(stages) + 1e-9)

    def test_one_variable_gets_no_overlap(self):
        self.assertEqual(costs.pipelined_milliseconds((2.0, 3.0, 4.0), 1.0), 9.0)

    def test_resnet50_largest_variable_is_the_one_in_the_model(self):
        import keras  # noqa: PLC0415  (only this test needs it)

        sizes = [
            int(math.prod(variable.shape))
            for variable in keras.applications.ResNet50(weights=None).trainable_variables
        ]
        resnet50 = facts.MODELS[0]
        self.assertEqual(resnet50.name, "ResNet-50")
        self.assertAlmostEqual(resnet50.largest_variable_fraction, max(sizes) / sum(sizes))


class TrafficTest(absltest.TestCase):
    def test_the_rule_reproduces_every_measured_point(self):
        for placement, measured in costs.MEASURED_TRAFFIC.items():
            for replicas, traffic in measured.items():
                self.assertEqual(costs.traffic(placement, replicas), traffic)

    def test_unknown_placement_has_no_traffic(self):
        with self.assertRaisesRegex(ValueError, "No measured traffic for placement='gpu0'"):
            costs.traffic("gpu0", 2)


class MemoryTest(absltest.TestCase):
    def test_host_weights_keep_gpu_memory_flat_while_mirrored_copies_grow(self):
        parameters = 1_000_000
        for slots in facts.OPTIMIZER_SLOTS.values():
            cpu = [
                memory.memory_footprint("cpu", parameters, replicas, slots)
                for replicas in _REPLICA_COUNTS
            ]
            mirrored = [
                memory.memory_footprint("mirrored", parameters, replicas, slots)
                for replicas in _REPLICA_COUNTS
            ]
            self.assertLen({footprint.busiest_gpu_bytes for footprint in cpu}, 1)
            for replicas, footprint in zip(_REPLICA_COUNTS, mirrored, strict=True):
                self.assertEqual(footprint.all_gpus_bytes, replicas * mirrored[0].all_gpus_bytes)
                self.assertLess(cpu[0].busiest_gpu_bytes, footprint.busiest_gpu_bytes)
                self.assertEqual(footprint.host_bytes, 0.0)

    def test_mirror_weights_holds_no_optimizer_state_on_gpus(self):
        for replicas in _REPLICA_COUNTS:
            momentum, adam = (
                memory.memory_footprint("mirror_weights", 1, replicas, slots) for slots in (1, 2)
            )
            self.assertEqual(adam.busiest_gpu_bytes, 8)  # working copy + gradients
            self.assertEqual(momentum.busiest_gpu_bytes, adam.busiest_gpu_bytes)
            self.assertEqual(adam.host_bytes, 16)  # master, two slots, the summed gradient

    def test_gpu0_holds_every_gradient_copy(self):
        one, eight = (memory.memory_footprint("gpu0", 1, replicas, 2) for replicas in (1, 8))
        self.assertEqual(one.busiest_gpu_bytes, 16)  # weights, Adam's two slots, gradients
        self.assertEqual(eight.busiest_gpu_bytes, 48)  # ... plus 7 received copies and the sum


class MixedPairTest(parameterized.TestCase):
    """A100 beside V100: an even split runs at 2x the slower GPU, a split by speed at the sum."""

    def setUp(self):
        super().setUp()
        self.steps = {point.label: point for point in mixed_pair.mixed_pair_steps()}
        self.a100, self.v100 = facts.MIXED_PAIR
        self.even = next(point for label, point in self.steps.items() if "even" in label)
        self.by_speed = next(point for label, point in self.steps.items() if "speed" in label)

    def test_even_split_runs_at_twice_the_slower_gpu_less_communication(self):
        slower = min(device.resnet50_images_per_second for device in facts.MIXED_PAIR)
        self.assertEqual(self.even.rows, (128, 128))
        self.assertAlmostEqual(self.even.overlapped_images_per_second, 2 * slower)
        self.assertLess(self.even.serial_images_per_second, 2 * slower)
        # The V100 makes the pair slower than the A100 alone when the split is even.
        self.assertLess(
            self.even.overlapped_images_per_second, self.a100.resnet50_images_per_second
        )

    def test_split_by_speed_runs_at_the_sum_of_both_rates_less_rounding(self):
        total = sum(device.resnet50_images_per_second for device in facts.MIXED_PAIR)
        self.assertEqual(sum(self.by_speed.rows), mixed_pair.MIXED_PAIR_GLOBAL_BATCH)
        self.assertLessEqual(self.by_speed.overlapped_images_per_second, total)
        self.assertGreater(self.by_speed.overlapped_images_per_second, 0.99 * total)
        self.assertGreater(
            self.by_speed.serial_images_per_second, 1.5 * self.even.serial_images_per_second
        )

    def test_communication_is_the_same_under_either_split_and_positive(self):
        self.assertGreater(self.even.all_reduce_milliseconds, 0)
        self.assertEqual(self.even.all_reduce_milliseconds, self.by_speed.all_reduce_milliseconds)
        for point in self.steps.values():
            self.assertLessEqual(point.serial_images_per_second, point.overlapped_images_per_second)

    @parameterized.parameters(
        (256, (909.0, 412.0)), (7, (1.0, 1.0)), (10, (3.0, 1.0)), (5, (1.0, 1.0, 1.0)), (1, (1, 2))
    )
    def test_split_rows_sum_to_the_batch_within_one_row_of_each_share(self, batch, weights):
        rows = mixed_pair.split_rows(batch, weights)
        self.assertEqual(sum(rows), batch)
        for count, weight in zip(rows, weights, strict=True):
            self.assertLess(abs(count - batch * weight / sum(weights)), 1)

    def test_split_rows_gives_ties_to_the_lower_index(self):
        self.assertEqual(mixed_pair.split_rows(7, (1.0, 1.0)), [4, 3])
        self.assertEqual(mixed_pair.split_rows(5, (1.0, 1.0, 1.0)), [2, 2, 1])

    def test_per_device_figures_are_the_published_ones(self):
        # SCALING.md, "A mixed pair", names their sources.
        self.assertEqual(
            (self.a100.resnet50_images_per_second, self.a100.resnet50_batch), (909.0, 256)
        )
        self.assertEqual(
            (self.v100.resnet50_images_per_second, self.v100.resnet50_batch), (412.0, 128)
        )
        self.assertIsNone(self.v100.tf32_tflops)
        document = (_REPOSITORY / "benchmarks" / "SCALING.md").read_text(encoding="utf-8")
        self.assertIn("## A mixed pair: one A100 and one V100", document)
        self.assertIn("resnet50v1.5/README.md", document)


class MarkdownTest(absltest.TestCase):
    def test_every_model_precision_and_gpu_count_has_a_row(self):
        markdown = rendering.build_markdown(
            _HARDWARE, gpu_scaling.default_scalings(), _REPLICA_COUNTS
        )
        for scaling in gpu_scaling.default_scalings():
            for model in facts.MODELS:
                for precision in facts.PRECISIONS:
                    heading = rendering.step_table_heading(model, precision, scaling)
                    self.assertIn(heading + "\n", markdown)
                    table = markdown.split(heading + "\n", 1)[1].split("\n#", 1)[0]
                    for placement in step_time.STEP_PLACEMENTS:
                        label = rendering.PLACEMENT_LABELS[placement]
                        for replicas in _REPLICA_COUNTS:
                            self.assertIn(f"| {label} | {replicas} |", table)

    def test_scaling_document_holds_the_current_tables(self):
        # Fails when the inputs or the model change: rerun
        # `python benchmarks/scaling_model.py --update_document=benchmarks/SCALING.md`.
        document = (_REPOSITORY / "benchmarks" / "SCALING.md").read_text(encoding="utf-8")
        markdown = rendering.build_markdown(
            _HARDWARE, gpu_scaling.default_scalings(), _REPLICA_COUNTS
        )
        self.assertEqual(rendering.replace_generated_block(document, markdown), document)

    def test_document_without_markers_is_rejected(self):
        with self.assertRaisesRegex(ValueError, "No generated block"):
            rendering.replace_generated_block("# Scaling\n", "tables")


if __name__ == "__main__":
    absltest.main()
