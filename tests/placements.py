"""The placement axis of the core suites: where the weights live and where the replicas run.

One definition for every parametrized test file, on the logical CPUs of tests/virtual_devices.py
(/cpu:0 .. /cpu:4). The parameter device is the host, /cpu:0, in every placement (the
constructor's default `parameter_device`); what changes is where the replicas run and whether
they keep working copies:

- "default": replicas on /cpu:1 .. /cpu:N, apart from the host, as GPUs are on a real machine.
- "mirror_weights": the same devices, `mirror_weights=True` (a copy of each trainable weight on
  each replica device).
- "parameter_on_replica": replicas on /cpu:0 .. /cpu:N-1, so the parameter device is the first
  replica's device (as `ReplicaStrategy(["/gpu:0", ...], parameter_device="/gpu:0")`, or
  `multi_gpu_model` on a machine whose first "GPU" is the CPU).

Oracles (MirroredStrategy) run on `replica_devices(placement, N)`, the same devices as the
strategy under test, so that their device placements and results stay comparable.

A test class joins the axis with `@across_placements(...)`: the class itself runs the first
placement named (so existing test ids stay those of "default"), and one subclass per other
placement, named `<Class>MirrorWeights` or `<Class>ParameterOnReplica`, runs the same tests with
`self.placement` set. `@default_placement_only` keeps one test (say, about a device chosen by the
test itself) out of the subclasses.
"""

import functools
import sys

import virtual_devices  # First: it gives the process its logical CPUs before TF initializes.

# isort: split

import tensorflow as tf

from replica_strategy import ReplicaStrategy, strategies

DEFAULT = "default"
MIRROR_WEIGHTS = "mirror_weights"
PARAMETER_ON_REPLICA = "parameter_on_replica"
PLACEMENTS = (DEFAULT, MIRROR_WEIGHTS, PARAMETER_ON_REPLICA)

HOST = "/cpu:0"  # The parameter (and merge) device of every placement.
MAX_REPLICAS = virtual_devices.NUM_CPUS - 1  # Replicas apart from the host: /cpu:1 .. /cpu:4.


def _check(placement):
    if placement not in PLACEMENTS:
        raise ValueError(f"Unknown placement {placement!r}; expected one of {PLACEMENTS}.")


def replica_devices(placement: str, num_replicas: int) -> list[str]:
    """The replica devices of `placement`: /cpu:1 .. /cpu:N, or /cpu:0 .. /cpu:N-1 on replica."""
    _check(placement)
    if not 1 <= num_replicas <= MAX_REPLICAS:
        raise ValueError(f"num_replicas must be in 1..{MAX_REPLICAS}; received {num_replicas}.")
    first = 0 if placement == PARAMETER_ON_REPLICA else 1
    return [f"/cpu:{index}" for index in range(first, first + num_replicas)]


def replica_device_indices(placement: str, num_replicas: int) -> list[int]:
    """The CPU indices of `replica_devices(placement, num_replicas)`, in replica order."""
    return [
        tf.DeviceSpec.from_string(d).device_index for d in replica_devices(placement, num_replicas)
    ]


def replica_strategy(placement: str, num_replicas: int, **kwargs) -> ReplicaStrategy:
    """A ReplicaStrategy in `placement` on `num_replicas` replicas; `kwargs` go to the constructor."""
    return ReplicaStrategy(
        replica_devices(placement, num_replicas),
        mirror_weights=placement == MIRROR_WEIGHTS,
        **kwargs,
    )


def mirrored_strategy(placement: str, num_replicas: int) -> tf.distribute.MirroredStrategy:
    """The oracle: MirroredStrategy on the replica devices of `placement`, reducing on one device.

    Reduction through one device, not collectives, for the reason given in
    `virtual_devices.mirrored_strategy`.
    """
    return tf.distribute.MirroredStrategy(
        replica_devices(placement, num_replicas),
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )


def collective_mirrored_strategy(placement: str, num_replicas: int):
    """MirroredStrategy with its default (collective) all-reduce on `placement`'s replica devices.

    One instance per device set, built by `replica_strategy.strategies.make_strategy`, which
    gives each MirroredStrategy collective keys of its own.
    """
    return _collective_mirrored_strategy(tuple(replica_devices(placement, num_replicas)))


@functools.cache
def _collective_mirrored_strategy(devices):
    return strategies.make_strategy("mirrored", list(devices))


class PlacementTestCase:
    """Mixin: `self.placement` and strategies in it. Put it before the TestCase base."""

    placement = DEFAULT

    def replica_strategy(self, num_replicas, **kwargs):
        return replica_strategy(self.placement, num_replicas, **kwargs)

    def mirrored_strategy(self, num_replicas):
        return mirrored_strategy(self.placement, num_replicas)

    def collective_mirrored_strategy(self, num_replicas):
        return collective_mirrored_strategy(self.placement, num_replicas)

    def replica_devices(self, num_replicas):
        return replica_devices(self.placement, num_replicas)

    def replica_device_indices(self, num_replicas):
        return replica_device_indices(self.placement, num_replicas)


def default_placement_only(test_method):
    """Runs `test_method` in the class's own placement only, not in its placement subclasses.

    For tests that choose their devices themselves (e.g. `parameter_device="/cpu:3"`) and would
    repeat the same check in every placement. Put it directly above `def`, under any
    parametrizing decorator.
    """
    test_method.default_placement_only = True
    return test_method


def _class_suffix(placement):
    return "".join(word.capitalize() for word in placement.split("_"))


def across_placements(*placements, first_placement_only=()):
    """Class decorator: runs the class's tests in each of `placements` (all of them if none).

    The class runs the first placement; each other placement gets a subclass, added to the
    class's module so that pytest and unittest collect it. `first_placement_only` names
    parameter cases (e.g. "four_replicas") whose tests the subclasses leave out, to keep the
    suite's time: a test whose name contains "_<case>" runs in the first placement only.
    """
    placements = placements or PLACEMENTS
    for placement in placements:
        _check(placement)

    def decorate(test_class):
        if not issubclass(test_class, PlacementTestCase):
            raise TypeError(f"{test_class.__name__} must derive from placements.PlacementTestCase.")
        test_class.placement = placements[0]
        module = sys.modules[test_class.__module__]
        single = {
            name: None  # Not callable: neither pytest nor unittest collects it.
            for name in dir(test_class)
            if name.startswith("test")
            and (
                getattr(getattr(test_class, name), "default_placement_only", False)
                or any(f"_{case}" in name for case in first_placement_only)
            )
        }
        for placement in placements[1:]:
            name = test_class.__name__ + _class_suffix(placement)
            variant = type(test_class)(
                name,
                (test_class,),
                {
                    "placement": placement,
                    "__module__": test_class.__module__,
                    "__qualname__": name,
                    "__doc__": f"{test_class.__name__} in the {placement!r} placement.",
                    **single,
                },
            )
            setattr(module, name, variant)
        return test_class

    return decorate
