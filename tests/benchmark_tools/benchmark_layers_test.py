"""benchmarks/ is in layers: what each module imports of benchmarks/, read from its source.

No TensorFlow needed: the imports are parsed with `ast`, nothing is imported.
"""

import ast
import pathlib

from absl.testing import absltest

_BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"

# A module may import modules of its own layer or of layers below it. Measuring never imports
# reporting; neither imports the GPU model, which stands on the vocabulary alone.
_LAYERS = {
    "vocabulary": ("benchmarks.machine", "benchmarks.placements"),
    "measuring": (
        "benchmarks.contestants",
        "benchmarks.host_pipeline",
        "benchmarks.host_update",
        "benchmarks.memory_probe",
        "benchmarks.auto_split_stability",
        "benchmarks.mixed_speeds",
        "benchmarks.row_weighting_cost",
        "benchmarks.suite",
        "benchmarks.traffic",
        "benchmarks.workloads",
    ),
    "reporting": ("benchmarks.outputs", "benchmarks.plots", "benchmarks.report"),
    "entry points": ("benchmarks.benchmark", "benchmarks.scaling_model"),
}
_GPU_MODEL_LAYERS = {
    "facts": ("benchmarks.gpu_model.hardware",),
    "model": (
        "benchmarks.gpu_model.costs",
        "benchmarks.gpu_model.memory",
        "benchmarks.gpu_model.mixed_pair",
        "benchmarks.gpu_model.scaling",
        "benchmarks.gpu_model.step_time",
    ),
    "rendering": ("benchmarks.gpu_model.charts", "benchmarks.gpu_model.markdown"),
}
# Which layers each layer may import (itself included).
_ALLOWED = {
    "vocabulary": {"vocabulary"},
    "measuring": {"vocabulary", "measuring"},
    "reporting": {"vocabulary", "measuring", "reporting"},
    "facts": {"vocabulary", "facts"},
    "model": {"vocabulary", "facts", "model"},
    "rendering": {"vocabulary", "facts", "model", "rendering"},
    "package": {"vocabulary", "facts", "model", "rendering"},
    "entry points": {
        "vocabulary", "measuring", "reporting", "facts", "model", "rendering", "package",
    },
}  # fmt: skip


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(_BENCHMARKS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, ast.Module]:
    return {
        _module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
        for path in sorted(_BENCHMARKS.rglob("*.py"))
    }


def _imported(node: ast.AST, known: set[str]) -> set[str]:
    """The modules of benchmarks/ that one import statement names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = {f"{node.module}.{alias.name}" for alias in node.names}
        return ({node.module} | names) & known
    return set()


def _layer_of(module: str) -> str:
    if module == "benchmarks.gpu_model":
        return "package"
    for layers in (_LAYERS, _GPU_MODEL_LAYERS):
        for layer, modules in layers.items():
            if module in modules:
                return layer
    raise KeyError(module)


class BenchmarkLayersTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.sources = _sources()
        known = set(self.sources)
        self.graph = {
            module: set().union(*(_imported(node, known) for node in tree.body)) - {module}
            for module, tree in self.sources.items()
        }
        self.hidden = {
            module: sorted(
                set().union(*(_imported(node, known) for node in ast.walk(tree)))
                - self.graph[module]
                - {module}
            )
            for module, tree in self.sources.items()
        }

    def test_every_module_has_a_layer(self):
        for module in self.sources:
            try:
                _layer_of(module)
            except KeyError:
                self.fail(f"{module} is in no layer: add it to _LAYERS or _GPU_MODEL_LAYERS.")

    def test_benchmark_modules_are_imported_at_the_top_of_a_module(self):
        # An import inside a function can hide a cycle from a reader and from this test.
        for module, hidden in self.hidden.items():
            self.assertEqual(hidden, [], msg=f"{module} imports these inside a function")

    def test_each_module_imports_only_its_own_layer_or_those_below(self):
        for module, imported in self.graph.items():
            allowed = _ALLOWED[_layer_of(module)]
            for dependency in sorted(imported):
                self.assertIn(
                    _layer_of(dependency),
                    allowed,
                    msg=f"{module} ({_layer_of(module)}) imports {dependency}",
                )

    def test_the_import_graph_has_no_cycle(self):
        finished, path = set(), []

        def visit(module):
            if module in path:
                self.fail("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
            if module in finished:
                return
            path.append(module)
            for dependency in sorted(self.graph[module]):
                visit(dependency)
            path.pop()
            finished.add(module)

        for module in sorted(self.graph):
            visit(module)

    def test_one_vocabulary_for_strategies(self):
        # The strategies' display names are written once, in placements.py.
        for module, tree in self.sources.items():
            if module == "benchmarks.placements":
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                    self.assertNotIn(
                        node.value.value,
                        ("MirroredStrategy", "ReplicaStrategy", "no strategy"),
                        msg=f"{module} spells a strategy's name; use benchmarks.placements",
                    )


if __name__ == "__main__":
    absltest.main()
