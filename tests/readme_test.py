"""The README's quick start runs as written (in a fresh process: it configures devices itself)."""

import os
import re
import subprocess
import sys
import tempfile

import tensorflow as tf

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start_code() -> str:
    with open(os.path.join(_REPOSITORY, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.DOTALL))


class ReadmeTest(tf.test.TestCase):
    def test_quick_start_runs_and_trains(self):
        code = _quick_start_code()
        self.assertIn("ReplicaStrategy", code)
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
        # The custom loop ends the output with one loss per step (256 rows in batches of 64).
        last_lines = result.stdout.strip().splitlines()[-4:]
        self.assertTrue(all(re.fullmatch(r"\d+\.\d+", line) for line in last_lines), last_lines)


if __name__ == "__main__":
    tf.test.main()
