"""Installing: each documented install command gives exactly one TensorFlow; the import check.

tf-keras requires the `tensorflow` distribution. When the `[cpu]` extra was `tensorflow-cpu`,
`pip install '.[cpu,legacy]'` installed both into one `tensorflow/` folder. These tests resolve
every install command the project documents, as pip does in a new virtual environment (a dry
run: pip reads the wheels' metadata from the index, it does not download them), and count the
TensorFlow distributions it would install. They need the package registries (PyPI, or the mirror
pip is configured with) and nothing else.
"""

import concurrent.futures
import importlib.metadata
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized

import project_wheel

_ROOT = project_wheel.ROOT

# Distributions that install the `tensorflow` module: two of them in one environment overwrite
# each other's files.
_TENSORFLOW_DISTRIBUTIONS = frozenset(
    {
        "intel-tensorflow",
        "tensorflow",
        "tensorflow-aarch64",
        "tensorflow-cpu",
        "tensorflow-cpu-aws",
        "tensorflow-gpu",
        "tensorflow-intel",
        "tensorflow-macos",
        "tensorflow-rocm",
        "tf-nightly",
        "tf-nightly-cpu",
        "tf-nightly-gpu",
        "tf-nightly-intel",
        "tf-nightly-macos",
    }
)

# The combinations that must work whatever the docs say today; the docs add theirs below.
_REQUIRED_COMBINATIONS = ("cpu", "gpu", "legacy", "cpu,legacy", "gpu,legacy", "cpu,test")

# Where install commands are written down: the docs, CI, and the import check's error message.
_DOCUMENTED_IN = ("README.md", "docs", ".ci/run", "replica_strategy/_tensorflow_check.py")

# `.[cpu,examples]` (after a quote or a space) or `replica_strategy[cpu]`.
_EXTRAS_PATTERN = re.compile(r"(?:(?<=['\"\s])\.|\breplica_strategy)\[([a-z][a-z, -]*)\]")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _documented_combinations() -> list[str]:
    """Every extras combination an install command in the docs, CI or error messages names."""
    found = set(_REQUIRED_COMBINATIONS)
    for entry in _DOCUMENTED_IN:
        path = _ROOT / entry
        files = sorted(path.rglob("*.md")) if path.is_dir() else [path] if path.exists() else []
        for file in files:
            for match in _EXTRAS_PATTERN.finditer(file.read_text()):
                extras = sorted({extra.strip() for extra in match.group(1).split(",")})
                found.add(",".join(extras))
    return sorted(found)


def _tensorflows(names) -> list[str]:
    return sorted(name for name in map(_normalized, names) if name in _TENSORFLOW_DISTRIBUTIONS)


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


class DocumentedInstallTest(parameterized.TestCase):
    """Resolves each documented `pip install` in a fresh venv, against our wheel."""

    _COMBINATIONS = _documented_combinations()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = pathlib.Path(tempfile.mkdtemp(prefix="install_test_"))
        cls._wheel = project_wheel.build_wheel(cls._tmp)
        venv = cls._tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cls._python = str(venv / "bin" / "python")
        # pip spends most of a resolution waiting on the index: resolve them side by side.
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            cls._resolved = dict(
                zip(cls._COMBINATIONS, pool.map(cls._resolve, cls._COMBINATIONS), strict=True)
            )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._tmp, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def _resolve(cls, extras: str):
        """(pip's exit code and stderr, the {name: version} pip would install)."""
        report = cls._tmp / f"report-{extras.replace(',', '-')}.json"
        result = _run(
            [
                cls._python,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                f"replica_strategy[{extras}] @ {cls._wheel.as_uri()}",
            ],
            timeout=1800,
        )
        if result.returncode != 0:
            return result, {}
        items = json.loads(report.read_text())["install"]
        return result, {
            _normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in items
        }

    def test_documented_combinations_include_the_required_ones(self):
        self.assertContainsSubset(_REQUIRED_COMBINATIONS, self._COMBINATIONS)
        self.assertIn("cpu,examples", self._COMBINATIONS)  # The README's first command.

    @parameterized.parameters(*_COMBINATIONS)
    def test_resolves_to_exactly_one_tensorflow(self, extras):
        result, installs = self._resolved[extras]
        self.assertEqual(result.returncode, 0, f"pip failed on [{extras}]:\n{result.stderr}")
        self.assertNotIn("does not provide the extra", result.stderr)
        tensorflows = _tensorflows(installs)
        self.assertLen(tensorflows, 1, f"[{extras}] would install {tensorflows}")
        self.assertTrue(installs[tensorflows[0]].startswith("2.21."), installs[tensorflows[0]])
        if "legacy" in extras or "test" in extras:
            self.assertTrue(installs["tf-keras"].startswith("2.21."), installs)
        if "gpu" in extras:
            self.assertTrue(any(name.startswith("nvidia-") for name in installs), installs)


class ThisEnvironmentTest(absltest.TestCase):
    def test_has_exactly_one_tensorflow(self):
        tensorflows = _tensorflows(
            distribution.metadata["Name"] for distribution in importlib.metadata.distributions()
        )
        self.assertLen(
            tensorflows,
            1,
            f"This environment has {tensorflows}. Keep only `tensorflow`, which tf-keras needs: "
            "pip uninstall -y tensorflow-cpu && "
            "pip install --force-reinstall --no-deps 'tensorflow==2.21.*'",
        )


class ImportCheckTest(absltest.TestCase):
    """`import replica_strategy` without a usable TensorFlow says what to install."""

    def _import_replica_strategy(self, prelude="", python_path=()):
        code = f"{prelude}\nimport replica_strategy"
        env = {"PYTHONPATH": ":".join([*python_path, str(_ROOT)]), "PATH": "/usr/bin:/bin"}
        return _run([sys.executable, "-c", code], env=env, cwd=self.create_tempdir().full_path)

    def test_without_tensorflow_names_the_extras(self):
        # None in sys.modules makes `import tensorflow` fail as if it were not installed.
        result = self._import_replica_strategy("import sys; sys.modules['tensorflow'] = None")
        self.assertNotEqual(result.returncode, 0)
        last_line = result.stderr.strip().splitlines()[-1]
        self.assertStartsWith(last_line, "ImportError: replica_strategy needs TensorFlow 2.21")
        self.assertIn("pip install 'replica_strategy[cpu]'", last_line)
        self.assertIn("'replica_strategy[gpu]'", last_line)
        self.assertIn("'replica_strategy[cpu,legacy]'", last_line)

    def test_with_another_tensorflow_version_names_it_and_the_extras(self):
        fake = pathlib.Path(self.create_tempdir().full_path)
        (fake / "tensorflow").mkdir()
        (fake / "tensorflow" / "__init__.py").write_text('__version__ = "2.20.0"\n')
        result = self._import_replica_strategy(python_path=[str(fake)])
        self.assertNotEqual(result.returncode, 0)
        last_line = result.stderr.strip().splitlines()[-1]
        self.assertStartsWith(last_line, "ImportError: replica_strategy supports TensorFlow 2.21.x")
        self.assertIn("Received: tensorflow 2.20.0", last_line)
        self.assertIn("pip install 'replica_strategy[cpu]'", last_line)

    def test_a_broken_tensorflow_keeps_its_own_error(self):
        fake = pathlib.Path(self.create_tempdir().full_path)
        (fake / "tensorflow").mkdir()
        (fake / "tensorflow" / "__init__.py").write_text("import a_missing_dependency\n")
        result = self._import_replica_strategy(python_path=[str(fake)])
        self.assertIn("ModuleNotFoundError: No module named 'a_missing_dependency'", result.stderr)


if __name__ == "__main__":
    absltest.main()
