"""The README's quick start and ReplicaStrategy's docstring example run as written.

Each runs in a fresh process, which configures its logical devices itself.
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start_code() -> str:
    with open(os.path.join(_REPOSITORY, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.DOTALL))


_TWO_LOGICAL_CPUS = """
import tensorflow as tf
import replica_strategy

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def _docstring_example() -> str:
    import replica_strategy  # noqa: PLC0415

    docstring = replica_strategy.ReplicaStrategy.__doc__
    code = re.findall(r"```python\n(.*?)```", docstring, re.DOTALL)[0]
    return _TWO_LOGICAL_CPUS + textwrap.dedent(code)


class ReadmeTest(tf.test.TestCase):
    def _run(self, code):
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
            script.write(code)
        result = subprocess.run(
            [sys.executable, script.name],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2"),
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        return result

    def test_strategy_docstring_example_prints_what_it_says(self):
        output = self._run(_docstring_example()).stdout
        self.assertIn("numpy=0", output)
        self.assertIn("numpy=1", output)
        self.assertIn("[0 0 1 1]", output)

    def test_quick_start_runs_and_trains(self):
        code = _quick_start_code()
        self.assertIn("ReplicaStrategy", code)
        result = self._run(code)
        # The custom loop ends the output with one loss per step (256 rows in batches of 64).
        last_lines = result.stdout.strip().splitlines()[-4:]
        self.assertTrue(all(re.fullmatch(r"\d+\.\d+", line) for line in last_lines), last_lines)


if __name__ == "__main__":
    tf.test.main()
