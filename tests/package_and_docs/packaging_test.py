"""The package as users get it: licence and metadata in the wheel, typed public API, layout."""

import ast
import email.parser
import importlib
import inspect
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

import tomllib
from absl.testing import absltest

import replica_strategy
from replica_strategy import _tensorflow_check

import project_wheel

# The modules of the strategy itself, which must not depend on the Keras-facing ones.
_CORE = ("_extended", "_variables", "batching", "devices", "logical_devices", "strategy", "version")
_KERAS_FACING = (
    "fused_adam",
    "keras_compat",
    "multi_gpu_shim",
    "uneven_batches",
)
# What adapts Keras and tf_keras code (docs/development.md, "Upstream internals"): the core
# reaches it through `_adapters` alone, from the public class.
_ADAPTERS = (
    "_keras3_loss_scale",
    "_keras3_optimizer",
    "_keras3_trainer",
    "_row_weights",
    "_tf_keras_optimizer",
    "_tf_keras_training",
    "tf_keras_support",
)


class WheelTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = pathlib.Path(tempfile.mkdtemp(prefix="packaging_test_"))
        cls._wheel = zipfile.ZipFile(project_wheel.build_wheel(cls._tmp))
        cls._dist_info = f"replica_strategy-{replica_strategy.__version__}.dist-info"
        metadata = cls._wheel.read(f"{cls._dist_info}/METADATA").decode()
        cls._metadata = email.parser.Parser().parsestr(metadata)

    @classmethod
    def tearDownClass(cls):
        cls._wheel.close()
        shutil.rmtree(cls._tmp, ignore_errors=True)
        super().tearDownClass()

    def test_metadata_has_the_apache_licence(self):
        self.assertEqual(self._metadata["License-Expression"], "Apache-2.0")
        self.assertCountEqual(self._metadata.get_all("License-File"), ["LICENSE", "NOTICE"])

    def test_wheel_ships_the_licence_text_and_notice(self):
        licence = self._wheel.read(f"{self._dist_info}/licenses/LICENSE").decode()
        self.assertIn("Apache License\n                           Version 2.0", licence)
        self.assertIn("END OF TERMS AND CONDITIONS", licence)
        notice = self._wheel.read(f"{self._dist_info}/licenses/NOTICE").decode()
        self.assertIn("Copyright 2017 The TensorFlow Authors", notice)  # Keras' wording.

    def test_metadata_has_author_urls_classifiers(self):
        self.assertEqual(self._metadata["Name"], "replica_strategy")
        self.assertEqual(self._metadata["Version"], replica_strategy.__version__)
        self.assertTrue(self._metadata["Author"])
        self.assertNotEmpty(self._metadata.get_all("Project-URL"))
        classifiers = self._metadata.get_all("Classifier")
        self.assertIn("Typing :: Typed", classifiers)
        self.assertIn("Programming Language :: Python :: 3.11", classifiers)
        self.assertEqual(self._metadata["Description-Content-Type"], "text/markdown")

    def test_wheel_ships_py_typed(self):
        self.assertIn("replica_strategy/py.typed", self._wheel.namelist())

    def test_tensorflow_pins_match_the_import_check(self):
        pins = [
            requirement
            for requirement in self._metadata.get_all("Requires-Dist")
            if requirement.startswith(("tensorflow", "tf-keras"))
        ]
        self.assertLen(pins, 3)  # [cpu], [gpu], [legacy].
        for pin in pins:
            self.assertIn(f"=={_tensorflow_check.SUPPORTED_TENSORFLOW}.*;", pin)


class SetupPyTest(absltest.TestCase):
    """The top-level setup.py defers to pyproject.toml: one source of metadata."""

    def test_setup_py_passes_nothing_to_setup(self):
        module = ast.parse((project_wheel.ROOT / "setup.py").read_text())
        docstring, importing, call = module.body  # Nothing else: no metadata of its own.
        self.assertIn("pyproject.toml", ast.get_docstring(module))
        self.assertIsInstance(docstring.value, ast.Constant)
        self.assertEqual(ast.unparse(importing), "from setuptools import setup")
        self.assertEqual(ast.unparse(call), "setup()")

    def test_setup_py_reports_the_name_and_version_of_pyproject_and_the_package(self):
        pyproject = tomllib.loads((project_wheel.ROOT / "pyproject.toml").read_text())
        with tempfile.TemporaryDirectory(prefix="packaging_test_") as tmp:
            source = project_wheel.copy_source(pathlib.Path(tmp))
            # The setuptools pyproject.toml asks for (the venv's may be older), as pip's build
            # would use; --target keeps it out of the venv.
            backend = pathlib.Path(tmp) / "build_requirements"
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", backend]
                + pyproject["build-system"]["requires"],
                check=True,
                timeout=600,
            )
            run = subprocess.run(
                [sys.executable, "setup.py", "--name", "--version"],
                cwd=source,
                env={"PYTHONPATH": str(backend), "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=300,
            )
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(
            run.stdout.split(), [pyproject["project"]["name"], replica_strategy.__version__]
        )


class PublicApiTest(absltest.TestCase):
    def test_all_lists_the_public_names(self):
        self.assertCountEqual(
            replica_strategy.__all__,
            [
                "FusedAdam",
                "MultiWorkerReplicaStrategy",
                "ReplicaStrategy",
                "__version__",
                "exact_uneven_batches",
                "logical_devices",
                "multi_gpu_model",
                "multi_worker",
                "register_tf_keras",
                "strategies",
            ],
        )
        for name in replica_strategy.__all__:
            self.assertTrue(hasattr(replica_strategy, name), name)

    def test_keras_compat_warns_and_still_exports_the_moved_helpers(self):
        sys.modules.pop("replica_strategy.keras_compat", None)
        with self.assertWarnsRegex(
            DeprecationWarning, "import multi_gpu_model.*from replica_strategy"
        ):
            keras_compat = importlib.import_module("replica_strategy.keras_compat")
        for name in ("exact_uneven_batches", "multi_gpu_model", "register_tf_keras"):
            self.assertIs(getattr(keras_compat, name), getattr(replica_strategy, name))

    def test_public_functions_are_annotated(self):
        # py.typed promises type checkers these annotations.
        functions = [
            replica_strategy.ReplicaStrategy.__init__,
            replica_strategy.exact_uneven_batches,
            replica_strategy.multi_gpu_model,
            replica_strategy.register_tf_keras,
            replica_strategy.logical_devices.cpu_names,
            replica_strategy.logical_devices.split_cpu,
            replica_strategy.strategies.make_strategy,
        ]
        for function in functions:
            signature = inspect.signature(function)
            for name, parameter in signature.parameters.items():
                if name != "self":
                    self.assertIsNot(parameter.annotation, inspect.Parameter.empty, parameter)
            if function.__name__ != "__init__":
                self.assertIsNot(signature.return_annotation, inspect.Signature.empty, function)


class ImportGraphTest(absltest.TestCase):
    """Imports run one way: the Keras-facing modules -> strategy -> _extended -> ..."""

    def _imports(self) -> dict[str, set[str]]:
        package = pathlib.Path(replica_strategy.__file__).parent
        modules = {path.stem for path in package.glob("*.py")}
        graph = {}
        for path in package.glob("*.py"):
            imported = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "replica_strategy":
                    imported.update(alias.name for alias in node.names if alias.name in modules)
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "replica_strategy."
                ):
                    imported.add(node.module.split(".")[1])
            graph[path.stem] = imported
        return graph

    def test_core_does_not_import_the_keras_facing_modules(self):
        graph = self._imports()
        for module in _CORE:
            self.assertEmpty(graph[module] & set(_KERAS_FACING), module)

    def test_the_core_reaches_the_adapters_through_one_module(self):
        graph = self._imports()
        for module in _CORE:
            self.assertEmpty(graph[module] & set(_ADAPTERS), module)
        self.assertEqual({module for module in _CORE if "_adapters" in graph[module]}, {"strategy"})
        self.assertEmpty(graph["_adapters"] & set(_KERAS_FACING))

    def test_there_is_no_import_cycle(self):
        graph = self._imports()
        done, in_progress = set(), []

        def visit(module):
            self.assertNotIn(module, in_progress, f"import cycle: {in_progress + [module]}")
            if module in done:
                return
            in_progress.append(module)
            for imported in graph.get(module, ()):
                visit(imported)
            in_progress.pop()
            done.add(module)

        for module in graph:
            visit(module)


if __name__ == "__main__":
    absltest.main()
