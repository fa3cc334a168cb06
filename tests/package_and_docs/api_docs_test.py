"""The API reference in docs/api/ is what pdoc generates from today's docstrings.

After changing a public name, signature or docstring, regenerate it from the repository root:

    .venv/bin/python tests/package_and_docs/api_docs_test.py --regenerate
"""

import difflib
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import tensorflow as tf

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_API_DIR = os.path.join(_REPOSITORY, "docs", "api")
_REGENERATE = ".venv/bin/python tests/package_and_docs/api_docs_test.py --regenerate"
# The package documents what its `__all__` exports; Google-style docstrings; no source listing,
# so the reference changes only when the API or its documentation does.
_PDOC_ARGUMENTS = ["-d", "google", "--no-search", "--no-show-source", "replica_strategy"]


def generate(output_dir: str) -> subprocess.CompletedProcess:
    """Runs pdoc on the package into `output_dir`."""
    return subprocess.run(
        [sys.executable, "-m", "pdoc", *_PDOC_ARGUMENTS, "--output-directory", output_dir],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2"),
        check=False,
    )


def _files(directory: str) -> dict[str, str]:
    files = {}
    for path in glob.glob(os.path.join(directory, "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as file:
            files[os.path.relpath(path, directory)] = file.read()
    return files


class ApiDocsTest(tf.test.TestCase):
    def test_committed_reference_matches_the_docstrings(self):
        with tempfile.TemporaryDirectory() as output_dir:
            result = generate(output_dir)
            self.assertEqual(result.returncode, 0, f"pdoc failed:\n{result.stderr[-3000:]}")
            generated = _files(output_dir)
        committed = _files(_API_DIR)
        self.assertIn("replica_strategy.html", generated)
        stale = f"docs/api/ is out of date with the docstrings; run: {_REGENERATE}"
        self.assertEqual(sorted(committed), sorted(generated), stale)
        for name, text in generated.items():
            diff = "".join(
                difflib.unified_diff(
                    committed[name].splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"committed {name}",
                    f"generated {name}",
                    n=1,
                )
            )
            if diff:
                self.fail(f"{stale}\n{diff[:3000]}")


def _regenerate() -> None:
    shutil.rmtree(_API_DIR, ignore_errors=True)
    result = generate(_API_DIR)
    sys.stderr.write(result.stderr if result.returncode else "")
    print(f"Wrote {sorted(_files(_API_DIR))} to {os.path.relpath(_API_DIR)}.")
    sys.exit(result.returncode)


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        _regenerate()
    else:
        tf.test.main()
