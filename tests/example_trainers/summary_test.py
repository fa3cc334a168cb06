"""`summary.json`: every field docs/trainers.md documents, of its type, and nothing else."""

import json
import os
import re

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import tensorflow as tf
from absl.testing import parameterized

from examples import train_custom_loop, train_keras

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TINY = {"num_samples": 32, "hidden_units": 4, "batch_size": 8, "epochs": 1, "verbose": 0}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_JSON_TYPES = {
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": _is_number,
    "boolean": lambda value: isinstance(value, bool),
    "object": lambda value: isinstance(value, dict),
    "null": lambda value: value is None,
    "array of strings": lambda value: (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    ),
    "array of numbers": lambda value: isinstance(value, list) and all(map(_is_number, value)),
}


def _documented_fields() -> dict:
    """{field: [type, ...]} from the table of docs/trainers.md; "a.b" is field b of object a."""
    with open(os.path.join(_REPOSITORY, "docs", "trainers.md")) as file:
        text = file.read()
    start = text.index("`summary.json` is the record of the run")
    section = text[start : text.index("\n## ", start)]
    rows = re.findall(r"^\| `([\w.]+)` \| (.+?) \| .+ \|$", section, re.MULTILINE)
    return {name: re.findall(r"`([^`]+)`", types) for name, types in rows}


def _fields(summary: dict, prefix: str = "") -> dict:
    """Every field of `summary`, objects' own fields as "object.field" too."""
    fields = {}
    for name, value in summary.items():
        fields[prefix + name] = value
        if isinstance(value, dict):
            fields.update(_fields(value, prefix + name + "."))
    return fields


class SummaryTest(tf.test.TestCase, parameterized.TestCase):
    def test_the_table_documents_fields_with_known_types(self):
        documented = _documented_fields()
        self.assertContainsSubset(["trainer", "strategy", "devices", "split.fractions"], documented)
        for name, types in documented.items():
            self.assertNotEmpty(types, name)
            self.assertContainsSubset(types, _JSON_TYPES, name)

    @parameterized.named_parameters(
        ("keras_replica", train_keras, "replica", {"split": (3, 1)}, [3, 1], [0.75, 0.25]),
        ("custom_loop_mirrored", train_custom_loop, "mirrored", {}, None, [0.5, 0.5]),
    )
    def test_summary_is_the_documented_record(
        self, trainer, strategy, options, requested, fractions
    ):
        model_dir = self.create_tempdir().full_path
        result = trainer.train(
            strategy=strategy,
            devices=virtual_devices.cpus(2),
            model_dir=model_dir,
            **options,
            **_TINY,
        )
        with open(os.path.join(model_dir, "summary.json")) as file:
            summary = json.load(file)

        documented = _documented_fields()
        fields = _fields(summary)
        self.assertCountEqual(fields, documented, "fields of summary.json vs docs/trainers.md")
        for name, value in fields.items():
            self.assertTrue(
                any(_JSON_TYPES[kind](value) for kind in documented[name]),
                f"{name}={value!r} is not {' or '.join(documented[name])}",
            )

        self.assertEqual(summary, result.summary)
        self.assertEqual(summary["trainer"], trainer.__name__.rsplit(".", 1)[-1])
        self.assertEqual(summary["strategy"], strategy)
        self.assertEqual(summary["devices"], ["/cpu:0", "/cpu:1"])
        self.assertEqual(summary["num_replicas"], 2)
        self.assertEqual(summary["split"]["requested"], requested)
        self.assertAllClose(summary["split"]["fractions"], fractions)
        self.assertGreater(summary["examples_per_second"], 0)

    def test_a_resumed_finished_run_records_no_throughput(self):
        model_dir = self.create_tempdir().full_path
        arguments = {"devices": virtual_devices.cpus(2), "model_dir": model_dir, **_TINY}
        train_keras.train(**arguments)
        summary = train_keras.train(**arguments).summary
        self.assertEqual(summary["initial_epoch"], 1)
        self.assertIsNone(summary["training_seconds"])
        self.assertIsNone(summary["examples_per_second"])


if __name__ == "__main__":
    tf.test.main()
