"""Smoke tests of the benchmark (benchmarks/): every contestant measured, every file written.

No timing assertions: the machine is shared, so only the shape of the results is checked.
"""

import json
import pathlib
import tempfile

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import tensorflow as tf

import replica_strategy
from benchmarks import (
    contestants,
    host_update,
    mixed_speeds,
    outputs,
    report,
    suite,
    traffic,
    workloads,
)

_DEVICE_COUNTS = (1, 2)
_TINY = suite.Settings(
    models=("mlp",),
    modes=workloads.MODES,
    device_counts=_DEVICE_COUNTS,
    global_batch=8,
    repetitions=2,
    steps_per_window=1,
    warmup_steps=1,
    memory_device_counts=(2,),
    memory_width=64,
    memory_layers=1,
    memory_batch_size=4,
    memory_repetitions=1,
    memory_processes=2,
    traffic_replica_counts=(2,),
    traffic_width=16,
    host_update_sizes=(),
    mixed_speed_repetitions=1,
    mixed_speed_steps_per_window=1,
    mixed_speed_warmup_steps=2,
)


class BenchmarkRunTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = suite.run(_TINY)

    def test_every_contestant_has_a_cell_per_mode(self):
        labels = [entry.label for entry in contestants.contestants(_DEVICE_COUNTS)]
        expected = {(mode, "mlp", label) for mode in workloads.MODES for label in labels}
        self.assertEqual(set(self.results["cells"]), expected)
        for cell in self.results["cells"].values():
            # A cell holds one window per repetition, or says why its contestant failed.
            if cell.failed:
                self.assertStartsWith(cell.failed, "failed: ")
            else:
                self.assertLen(cell.seconds, _TINY.repetitions)

    def test_replica_strategy_runs_every_mode(self):
        for count in _DEVICE_COUNTS:
            for mode in workloads.MODES:
                cell = self.results["cells"][(mode, "mlp", f"ReplicaStrategy x{count}")]
                self.assertIsNone(cell.failed, msg=f"{mode} on {count} device(s)")

    def test_markdown_has_a_row_per_strategy_and_the_ratio_tables(self):
        text = report.markdown(self.results)
        for mode in workloads.MODES:
            self.assertIn(f"## `{mode}`, mlp: samples/s", text)
        for name in contestants.NAMES:
            self.assertIn(f"| {name} |", text)
        self.assertIn("| fit | mlp | ReplicaStrategy | MirroredStrategy |", text)
        self.assertIn("## Overhead: step time of ReplicaStrategy on 1 device / no strategy", text)
        self.assertIn("| ReplicaStrategy | 2 |", text)
        self.assertIn("| MirroredStrategy | 2 |", text)

    def test_memory_probe_counts_one_copy_against_one_per_replica(self):
        rows = {row["contestant"]: row for row in report.memory_rows(self.results["memory"])}
        self.assertNotIn("failed", rows["ReplicaStrategy"])
        self.assertNotIn("failed", rows["MirroredStrategy"])
        # MirroredStrategy keeps a copy of every weight and slot on each of the 2 replicas.
        self.assertAllClose(
            rows["MirroredStrategy"]["variable_mib"],
            2 * rows["ReplicaStrategy"]["variable_mib"],
            rtol=0.01,
        )
        self.assertGreater(rows["ReplicaStrategy"]["peak_rss_mib"].median, 0)
        # Per device: ReplicaStrategy's weights and Adam's slots on the host only; MirroredStrategy
        # holds them all on each replica device and nothing on the host.
        self.assertAllClose(
            rows["ReplicaStrategy"]["host_mib"], rows["ReplicaStrategy"]["variable_mib"], rtol=0.01
        )
        self.assertLess(rows["ReplicaStrategy"]["replica_mib"], 0.001)
        self.assertEqual(rows["MirroredStrategy"]["host_mib"], 0)
        self.assertAllClose(
            rows["MirroredStrategy"]["replica_mib"], rows["ReplicaStrategy"]["host_mib"], rtol=0.01
        )

    def test_traffic_table_is_in_the_report(self):
        configurations = {result["configuration"] for result in self.results["traffic"]}
        self.assertEqual(configurations, set(traffic.CONFIGURATIONS))
        text = report.markdown(self.results)
        self.assertIn("## Bytes that cross devices per training step", text)
        self.assertIn("| ReplicaStrategy | 2 |", traffic.traffic_table(self.results["traffic"]))

    def test_mixed_speed_simulation_runs_in_its_own_process_into_the_report(self):
        mixed = self.results["mixed_speeds"]
        self.assertNotIn("failed", mixed)
        self.assertEqual([row["name"] for row in mixed["rows"]], list(mixed_speeds.NAMES))
        text = report.markdown(self.results)
        self.assertIn("## One replica 3x slower (SIMULATION)", text)
        for name in mixed_speeds.NAMES:
            self.assertIn(f"| {name} |", text)

    def test_write_outputs_writes_json_markdown_and_plot(self):
        with tempfile.TemporaryDirectory() as directory:
            paths = outputs.write_outputs(self.results, pathlib.Path(directory) / "results")
            for path in paths.values():
                self.assertTrue(path.exists(), msg=str(path))
            raw = json.loads(paths["json"].read_text())
            self.assertLen(raw["cells"], len(self.results["cells"]))
            self.assertIn("| ReplicaStrategy |", paths["markdown"].read_text())
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                self.assertNotIn("plot", paths)
            else:
                self.assertGreater(paths["plot"].stat().st_size, 0)
                self.assertGreater(paths["headline"].stat().st_size, 0)
                self.assertGreater(paths["mixed_speeds_plot"].stat().st_size, 0)


_MIXED_TINY = mixed_speeds.Settings(
    seconds_per_row=(0.5e-3, 1.5e-3),
    global_batch=8,
    repetitions=2,
    steps_per_window=2,
    warmup_steps=3,
    width=8,
)


class MixedSpeedsTest(tf.test.TestCase):
    """benchmarks/mixed_speeds.py on tiny settings: the table's shape and invariants, no timing."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.results = mixed_speeds.measure(_MIXED_TINY)
        cls.rows = {row["name"]: row for row in cls.results["rows"]}

    def test_every_contestant_runs_every_window(self):
        self.assertEqual(list(self.rows), list(mixed_speeds.NAMES))
        for name, row in self.rows.items():
            self.assertIsNone(row["failed"], msg=name)
            self.assertLen(row["seconds"], _MIXED_TINY.repetitions)
            self.assertTrue(all(seconds > 0 for seconds in row["seconds"]), msg=name)

    def test_splits_in_force_at_the_end(self):
        self.assertAllClose(self.rows[mixed_speeds.EVEN]["final_split"], [0.5, 0.5])
        self.assertAllClose(self.rows[mixed_speeds.STATIC]["final_split"], [0.75, 0.25])
        auto = self.rows[mixed_speeds.AUTO]["final_split"]
        self.assertAllClose(sum(auto), 1.0)
        self.assertTrue(all(fraction > 0 for fraction in auto))
        self.assertIsNone(self.rows[mixed_speeds.MIRRORED]["final_split"])

    def test_auto_split_is_recorded_after_every_step(self):
        fractions = self.rows[mixed_speeds.AUTO]["fractions"]
        # fit runs one step more than each window times (its first batch starts the clock).
        steps = _MIXED_TINY.warmup_steps + 1
        steps += _MIXED_TINY.repetitions * (_MIXED_TINY.steps_per_window + 1)
        self.assertLen(fractions, steps)
        self.assertEqual(self.rows[mixed_speeds.AUTO]["initial_split"], [0.5, 0.5])
        for split in fractions:
            self.assertAllClose(sum(split), 1.0)
        self.assertBetween(mixed_speeds.settled_step(fractions), 1, steps)
        auto = {entry["name"]: entry for entry in mixed_speeds.summary(self.results)}[
            mixed_speeds.AUTO
        ]
        self.assertLen(auto["median_split"], 2)
        if auto["reached_true_speeds_step"] is not None:
            self.assertBetween(auto["near_true_speeds_share"], 0.0, 1.0)

    def test_no_step_is_traced_again_whatever_the_split(self):
        for name, row in self.rows.items():
            self.assertEqual(row["retraces"], 0, msg=name)

    def test_table_has_a_row_per_contestant_and_says_it_is_a_simulation(self):
        text = mixed_speeds.markdown(self.results)
        for name in mixed_speeds.NAMES:
            self.assertIn(f"| {name} |", text)
        self.assertIn("SIMULATION on logical CPUs", text)
        self.assertIn("True speeds: split 0.750 / 0.250", text)
        summaries = {entry["name"]: entry for entry in mixed_speeds.summary(self.results)}
        self.assertAllClose(summaries[mixed_speeds.EVEN]["over_even"], [1.0, 1.0])
        for entry in summaries.values():
            self.assertLen(entry["rows_per_second"], _MIXED_TINY.repetitions)

    def test_plot_is_written(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib is not installed")
        with tempfile.TemporaryDirectory() as directory:
            path = pathlib.Path(directory) / "mixed.png"
            self.assertTrue(mixed_speeds.write_plot(self.results, path))
            self.assertGreater(path.stat().st_size, 0)


class MixedSpeedsSettingsTest(tf.test.TestCase):
    def test_true_split_and_bounds_follow_the_simulated_speeds(self):
        settings = mixed_speeds.Settings(seconds_per_row=(0.25e-3, 0.75e-3), global_batch=64)
        self.assertAllClose(settings.true_split, (0.75, 0.25))
        # Even: 32 rows on the slow device, 24 ms per step; by speed: 4,000 + 1,333 rows/s.
        self.assertAllClose(settings.even_bound, 64 / 0.024)
        self.assertAllClose(settings.speed_bound, 4000 + 4000 / 3)
        self.assertAllClose(settings.speed_bound / settings.even_bound, 2.0)

    def test_rejects_a_time_per_row_not_one_per_replica_or_not_positive(self):
        for seconds in ((1e-3,), (1e-3, 0.0), (1e-3, -1e-3)):
            with self.assertRaisesRegex(ValueError, "seconds_per_row"):
                mixed_speeds.Settings(seconds_per_row=seconds).validate()

    def test_settled_step_is_where_the_split_stops_moving(self):
        steps = [[0.5, 0.5], [0.6, 0.4], [0.71, 0.29], [0.74, 0.26], [0.75, 0.25], [0.751, 0.249]]
        self.assertEqual(mixed_speeds.settled_step(steps), 4)
        self.assertEqual(mixed_speeds.settled_step([[0.5, 0.5]] * 3), 1)
        self.assertIsNone(mixed_speeds.settled_step([]))
        self.assertEqual(mixed_speeds.settled_step(steps, (0.75, 0.25), tolerance=0.05), 3)
        self.assertIsNone(mixed_speeds.settled_step(steps[:2], (0.75, 0.25), tolerance=0.05))

    def test_first_step_near_and_share_near_the_true_speeds(self):
        steps = [[0.5, 0.5], [0.72, 0.28], [0.75, 0.25], [0.9, 0.1], [0.76, 0.24]]
        self.assertEqual(mixed_speeds.first_step_near(steps, (0.75, 0.25), 0.05), 2)
        self.assertIsNone(mixed_speeds.first_step_near(steps[:1], (0.75, 0.25), 0.05))
        self.assertAllClose(mixed_speeds.share_near(steps[1:], (0.75, 0.25), 0.05), 0.75)
        self.assertIsNone(mixed_speeds.share_near([], (0.75, 0.25), 0.05))


class VariableBytesTest(tf.test.TestCase):
    def _dense_bytes(self, strategy):
        with contestants.recording_variables() as created, contestants.scope(strategy):
            tf.keras.layers.Dense(3).build((None, 4))
        return contestants.variable_bytes(created)

    def test_counts_each_mirrored_copy_and_one_parameter_copy(self):
        # Dense(4 -> 3): 15 float32 parameters, 60 bytes per copy.
        devices = virtual_devices.cpus(2)
        self.assertEqual(self._dense_bytes(None), 60)
        self.assertEqual(self._dense_bytes(replica_strategy.ReplicaStrategy(devices)), 60)
        self.assertEqual(self._dense_bytes(tf.distribute.MirroredStrategy(devices)), 120)


class HostUpdateTest(tf.test.TestCase):
    def test_times_keras_adam_fused_adam_and_the_bare_kernel_and_converts_to_passes(self):
        results = {
            "machine": {"cores": 2, "cpu_model": "test CPU"},
            "adam": [host_update.adam_update(20_000, repetitions=2)],
        }
        row = results["adam"][0]
        for kind in ("keras", "fused", "kernel"):
            self.assertBetween(row[kind]["min_ms"], 0, row[kind]["median_ms"])
        self.assertGreater(row["fused_over_kernel"], 0)
        self.assertAllClose(
            host_update.keras_adam_passes(results), 7 * row["keras_over_fused"], rtol=1e-12
        )
        self.assertIn("| 20,000 |", host_update.markdown(results))


class SettingsTest(tf.test.TestCase):
    def test_rejects_a_global_batch_that_does_not_split_evenly(self):
        settings = suite.Settings(device_counts=(1, 4), global_batch=10)
        with self.assertRaisesRegex(ValueError, "does not split evenly on \\[4\\] devices"):
            settings.validate()

    def test_rejects_an_unknown_contestant(self):
        settings = suite.Settings(contestant_names=("HorovodStrategy",))
        with self.assertRaisesRegex(ValueError, "Unknown contestants"):
            settings.validate()


class ReportTest(tf.test.TestCase):
    def test_a_failed_contestant_shows_its_reason_in_its_cell(self):
        failed = workloads.Cell(
            contestants.Contestant("CentralStorageStrategy", 2), failed="failed: x"
        )
        cells = {("fit", "mlp", failed.contestant.label): failed}
        table = report.throughput_table(cells, "fit", "mlp", (1, 2), samples_per_window=8)
        self.assertIn("| CentralStorageStrategy | – | failed: x |", table)

    def test_paired_ratio_divides_repetition_by_repetition(self):
        entry = contestants.Contestant("ReplicaStrategy", 1)
        ratio = report.paired_ratio(
            workloads.Cell(entry, [2.0, 6.0, 3.0]), workloads.Cell(entry, [1.0, 2.0, 3.0])
        )
        self.assertEqual((ratio.minimum, ratio.median, ratio.maximum), (1.0, 2.0, 3.0))


if __name__ == "__main__":
    tf.test.main()
