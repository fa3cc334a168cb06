"""Runs tf_keras' own tf.distribute tests, vendored verbatim in ./distribute/, on ReplicaStrategy.

The vendored files stay byte-identical to upstream (UPSTREAM.md says how to check); everything
this project changes is here and in the `upstream_*_test.py` runners beside it:

- `load(name)` imports `distribute/<name>.py` with upstream's strategy combinations swapped for
  ReplicaStrategy, and with the import paths of the tf_keras source tree (`tf_keras.distribute`,
  `tf_keras.engine`, ...) aliased to where the installed wheel has them (`tf_keras.src...`).
  Both are undone once the module is imported: the combinations are bound when upstream's
  `@combinations.generate` decorators run, so no other test module sees the swap. The module's
  `keras` (`import tf_keras as keras`) then reaches the source tree's modules too
  (`keras.optimizers.legacy.rmsprop`).
- `@replica_strategy_cases` on a runner class keeps the cases that run on ReplicaStrategy, one
  per replica count, named as before (`..._distribution_ReplicaStrategy2CPUs_...`), and runs
  them in every placement of tests/placements.py (`<Class>MirrorWeights`, ...).

Upstream's strategies and what runs instead (`_REPLICAS`): one-replica strategies
(OneDeviceStrategy, MirroredStrategy on one CPU) become ReplicaStrategy on one replica, in the
default placement only (the suite's time); two-device strategies (MirroredStrategy and
CentralStorageStrategy on a GPU and a CPU or on two GPUs) become ReplicaStrategy on two replicas,
in every placement; where several of them map to the same ReplicaStrategy, their case runs
once. The default strategy, TPUs, one GPU, several workers and parameter-server clusters are
not run (no such hardware or cluster here; the default strategy does not test this package).
"""

import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
import types

_TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _TESTS not in sys.path:  # Under Bazel; under pytest, tests/conftest.py has added it.
    sys.path.insert(0, _TESTS)

import virtual_devices  # noqa: E402, F401  (logical CPUs before TensorFlow initializes)

# isort: split

import tensorflow as tf  # noqa: E402
import tensorflow.compat.v2 as tf_v2  # noqa: E402
from tensorflow.python.distribute import combinations as tf_combinations  # noqa: E402

import placements  # noqa: E402

UPSTREAM = "keras-team/tf-keras"
UPSTREAM_COMMIT = "dd0a7237b9b24132dba3f491f3c84b0094ab796e"
_VENDORED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute")

# Upstream's strategy (an attribute of tf.__internal__.distribute.combinations) -> replicas.
# The order is the priority when several map to one ReplicaStrategy case.
_REPLICAS = {
    "mirrored_strategy_with_one_cpu": 1,
    "one_device_strategy": 1,
    "mirrored_strategy_with_gpu_and_cpu": 2,
    "mirrored_strategy_with_two_gpus": 2,
    "central_storage_strategy_with_gpu_and_cpu": 2,
    "central_storage_strategy_with_two_gpus": 2,
}
ONE_REPLICA = "ReplicaStrategy1CPU"
TWO_REPLICAS = "ReplicaStrategy2CPUs"


class _SourceTreeFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `tf_keras.<path>` of tf_keras' source tree, which the wheel has as `tf_keras.src.<path>`.

    Only for names the wheel's public API lacks (`tf_keras.engine.base_layer`,
    `tf_keras.optimizers.legacy.adam`, ...); `tf_keras.distribute`, the package of the vendored
    files, is `load`'s own.
    """

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("tf_keras.") or fullname.startswith("tf_keras.src."):
            return None
        source = "tf_keras.src." + fullname.removeprefix("tf_keras.")
        if importlib.util.find_spec(source) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=source)

    def __init__(self):
        self._specs = {}

    def create_module(self, spec):
        module = importlib.import_module(spec.origin)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has set the alias' spec on the wheel's module: put its own back.
        module.__spec__ = self._specs.pop(module.__spec__.name)


_placement = placements.DEFAULT  # The running test's; set by PlacementCase.setUp.


def _replica_strategy(num_replicas):
    return placements.replica_strategy(_placement, num_replicas)


def _api_modules():
    """tf.__internal__.distribute.combinations, in tf and in tf.compat.v2 (two module objects)."""
    return {
        id(m): m
        for m in (
            tf.__internal__.distribute.combinations,
            tf_v2.__internal__.distribute.combinations,
        )
    }.values()


def _replacements():
    """Upstream's NamedDistribution objects -> ReplicaStrategy's, by identity."""
    combinations = tf.__internal__.distribute.combinations
    replacements = {}
    for attr, num_replicas in _REPLICAS.items():
        upstream = getattr(combinations, attr)
        base = ONE_REPLICA if num_replicas == 1 else TWO_REPLICAS
        # "From<upstream>" keeps names unique; replica_strategy_cases takes it out again.
        replacements[id(upstream)] = tf_combinations.NamedDistribution(
            f"{base}From{upstream!r}", lambda n=num_replicas: _replica_strategy(n)
        )
    return replacements


def _strategy_combinations(replacements):
    """tf_keras.distribute.strategy_combinations, its lists naming ReplicaStrategy."""
    installed = importlib.import_module("tf_keras.src.distribute.strategy_combinations")
    module = types.ModuleType("tf_keras.distribute.strategy_combinations", installed.__doc__)
    for name, value in vars(installed).items():
        if isinstance(value, list):
            setattr(module, name, [replacements.get(id(d), d) for d in value])
    return module


class _SourceTree:
    """`tf_keras` as its source tree lays it out, for the vendored files' `import tf_keras as keras`.

    The public API where it has the name; else the installed wheel's `tf_keras.src.<path>`
    (`keras.optimizers.legacy.rmsprop`, a module of the source tree, is not in the API).
    """

    def __init__(self, public, path=""):
        self._public, self._path = public, path

    def __getattr__(self, name):
        path = f"{self._path}.{name}" if self._path else name
        try:
            value = getattr(self._public, name)
        except AttributeError:
            return importlib.import_module(f"tf_keras.src.{path}")
        return _SourceTree(value, path) if isinstance(value, types.ModuleType) else value


@contextlib.contextmanager
def _patched(name, value, *, on):
    missing = object()
    before = on.get(name, missing) if isinstance(on, dict) else getattr(on, name, missing)
    if isinstance(on, dict):
        on[name] = value
    else:
        setattr(on, name, value)
    try:
        yield
    finally:
        if isinstance(on, dict):
            on.pop(name) if before is missing else on.__setitem__(name, before)
        else:
            setattr(on, name, before)


def _wheel_module(attr):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return importlib.import_module(f"tf_keras.src.distribute.{attr}")


def load(name):
    """Imports the vendored `distribute/<name>.py`, its strategies ReplicaStrategy's."""
    replacements = _replacements()
    combinations = _strategy_combinations(replacements)
    package = types.ModuleType("tf_keras.distribute")
    package.strategy_combinations = combinations
    package.__getattr__ = _wheel_module  # Its other modules (distributed_training_utils, ...).
    modules = {
        "tf_keras.distribute": package,
        "tf_keras.distribute.strategy_combinations": combinations,
    }
    spec = importlib.util.spec_from_file_location(
        f"upstream_tf_keras.{name}", os.path.join(_VENDORED, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    imported = set(sys.modules)
    with contextlib.ExitStack() as stack:
        # No __pycache__ beside the vendored files: `diff -r` against upstream stays empty.
        stack.enter_context(_patched("dont_write_bytecode", True, on=sys))
        finder = _SourceTreeFinder()
        sys.meta_path.append(finder)
        stack.callback(sys.meta_path.remove, finder)
        for alias, real in modules.items():
            stack.enter_context(_patched(alias, real, on=sys.modules))
        for api in _api_modules():
            for attr in _REPLICAS:
                upstream = getattr(api, attr)
                stack.enter_context(_patched(attr, replacements[id(upstream)], on=api))
        spec.loader.exec_module(module)
    for alias in set(sys.modules) - imported:  # The source tree's names, aliased by the finder.
        if sys.modules[alias].__name__ != alias:
            del sys.modules[alias]
    tf_keras = sys.modules["tf_keras"]
    for name, value in list(vars(module).items()):
        if value is tf_keras:
            setattr(module, name, _SourceTree(tf_keras))
    return module


class PlacementCase(placements.PlacementTestCase):
    """Mixin for runner classes: the strategies of the running test are in its placement."""

    def setUp(self):
        global _placement
        _placement = self.placement
        super().setUp()


_FROM = re.compile(r"(ReplicaStrategy\dCPUs?)From([A-Za-z0-9]+)")


def _priority(test_name):
    upstream = _FROM.search(test_name).group(2)
    names = [repr(getattr(tf.__internal__.distribute.combinations, a)) for a in _REPLICAS]
    return names.index(upstream)


def replica_strategy_cases(test_class=None, *, one_replica_in_every_placement=False, only=()):
    """Class decorator for runners: ReplicaStrategy's cases, once each, in every placement.

    One-replica cases run in the default placement only, unless `one_replica_in_every_placement`.
    A case the runner class defines itself (an adapted one, under its final name) is kept as
    the runner wrote it. `only`, if given, names the upstream tests to run; the others do not.
    """
    if test_class is None:
        return lambda test_class: replica_strategy_cases(
            test_class, one_replica_in_every_placement=one_replica_in_every_placement, only=only
        )
    for name in dir(test_class):
        if only and name.startswith("test") and not name.startswith(tuple(only)):
            setattr(test_class, name, None)
    if not issubclass(test_class, PlacementCase):
        raise TypeError(f"{test_class.__name__} must derive from {PlacementCase.__name__}.")
    own = {name for name, value in vars(test_class).items() if callable(value)}
    originals, by_name = {}, {}
    for name in dir(test_class):
        if not name.startswith("test") or "_distribution_" not in name or name in own:
            continue
        originals[name] = getattr(test_class, name)
        setattr(test_class, name, None)  # Not callable: neither pytest nor unittest runs it.
        if _FROM.search(name):
            by_name.setdefault(_FROM.sub(r"\1", name), []).append(name)
    unknown = {n for n in own if "_distribution_" in n and n.startswith("test")} - set(by_name)
    if unknown:
        raise ValueError(f"{test_class.__name__} adapts cases upstream does not have: {unknown}")
    for final, names in by_name.items():
        if final not in own:
            setattr(test_class, final, originals[min(names, key=_priority)])
    first_only = () if one_replica_in_every_placement else (f"distribution_{ONE_REPLICA}",)
    return placements.across_placements(first_placement_only=first_only)(test_class)
