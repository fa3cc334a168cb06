"""One vocabulary for the strategies and weight placements every benchmark talks about.

Three benchmarks look at the same axis from different sides: the CPU benchmark
(`contestants.py`) measures throughput per strategy, the traffic meter (`traffic.py`) measures
bytes per strategy, and the GPU model (`gpu_model/`) predicts step time and memory per placement
of the weights. They share these names, so a row of one table can be matched with a row of
another without parsing labels.

The members are strings (`enum.StrEnum`): they compare equal to their values, so flags, JSON
results and table cells keep plain text.

    Strategy.MIRROR_WEIGHTS == "ReplicaStrategy mirror_weights"  # True
    StepPlacement.CPU_PINNED.placement is Placement.CPU          # True
    Placement.GPU0.strategy is Strategy.REPLICA                   # True
"""

from __future__ import annotations

import dataclasses
import enum


class _Name(enum.StrEnum):
    """A name of the vocabulary; its repr is its value's, so messages and lists show plain text."""

    def __repr__(self) -> str:
        return repr(self.value)


class Strategy(_Name):
    """A strategy as the benchmarks run it, named as its tables show it."""

    NO_STRATEGY = "no strategy"
    ONE_DEVICE = "OneDeviceStrategy"
    REPLICA = "ReplicaStrategy"
    MIRROR_WEIGHTS = "ReplicaStrategy mirror_weights"
    MIRRORED = "MirroredStrategy"
    CENTRAL_STORAGE = "CentralStorageStrategy"

    @property
    def library_name(self) -> str | None:
        """Its name for `replica_strategy.strategies.make_strategy`; None: no strategy at all."""
        return _LIBRARY_NAMES[self]

    @property
    def replica_options(self) -> dict[str, object]:
        """`ReplicaStrategy` keyword arguments that make this strategy."""
        return {"mirror_weights": True} if self is Strategy.MIRROR_WEIGHTS else {}


_LIBRARY_NAMES = {
    Strategy.NO_STRATEGY: None,
    Strategy.ONE_DEVICE: "one_device",
    Strategy.REPLICA: "replica",
    Strategy.MIRROR_WEIGHTS: "replica",
    Strategy.MIRRORED: "mirrored",
    Strategy.CENTRAL_STORAGE: "central_storage",
}


class Placement(_Name):
    """Where the float32 weights live: it sets the bytes moved per step and held per device."""

    CPU = "cpu"  # ReplicaStrategy(): one copy on the host.
    MIRROR_WEIGHTS = "mirror_weights"  # The master on the host, a working copy per GPU.
    GPU0 = "gpu0"  # ReplicaStrategy(parameter_device="/gpu:0").
    MIRRORED = "mirrored"  # A copy per GPU, all-reduced gradients.

    @property
    def strategy(self) -> Strategy:
        """The strategy that places the weights so."""
        return _STRATEGY_OF_PLACEMENT[self]


_STRATEGY_OF_PLACEMENT = {
    Placement.CPU: Strategy.REPLICA,
    Placement.MIRROR_WEIGHTS: Strategy.MIRROR_WEIGHTS,
    Placement.GPU0: Strategy.REPLICA,
    Placement.MIRRORED: Strategy.MIRRORED,
}


class HostOptimizer(_Name):
    """The Adam update the host runs where it holds the master weights."""

    FUSED = "fused"  # replica_strategy.FusedAdam: TensorFlow's ResourceApplyAdam kernel.
    KERAS = "keras"  # Keras 3's Adam: a chain of element-wise ops.


@dataclasses.dataclass(frozen=True)
class HowTheHostWorks:
    """The parts of a step-time row besides the placement.

    Attributes:
        placement: Where the weights live.
        pinned: Whether host buffers are pinned (bounds PCIe bandwidth); only the CPU-hosted
            rows differ in it.
        host_optimizer: The host's Adam for this row; None takes the hardware's default.
        update_overlapped: The host's update runs beside the next step (one step delayed).
    """

    placement: Placement
    pinned: bool = True
    host_optimizer: HostOptimizer | None = None
    update_overlapped: bool = False


class StepPlacement(_Name):
    """A row of the GPU model's step-time tables: a placement and how the host works."""

    CPU_PINNED = "cpu_pinned"
    CPU_PAGEABLE = "cpu_pageable"
    MIRROR_WEIGHTS_KERAS_ADAM = "mirror_weights_keras_adam"
    MIRROR_WEIGHTS = "mirror_weights"
    MIRROR_WEIGHTS_DELAYED = "mirror_weights_delayed"
    GPU0 = "gpu0"
    MIRRORED = "mirrored"

    @property
    def parts(self) -> HowTheHostWorks:
        return _STEP_PARTS[self]

    @property
    def placement(self) -> Placement:
        return self.parts.placement


_STEP_PARTS = {
    StepPlacement.CPU_PINNED: HowTheHostWorks(Placement.CPU),
    StepPlacement.CPU_PAGEABLE: HowTheHostWorks(Placement.CPU, pinned=False),
    StepPlacement.MIRROR_WEIGHTS_KERAS_ADAM: HowTheHostWorks(
        Placement.MIRROR_WEIGHTS, host_optimizer=HostOptimizer.KERAS
    ),
    StepPlacement.MIRROR_WEIGHTS: HowTheHostWorks(Placement.MIRROR_WEIGHTS),
    StepPlacement.MIRROR_WEIGHTS_DELAYED: HowTheHostWorks(
        Placement.MIRROR_WEIGHTS, update_overlapped=True
    ),
    StepPlacement.GPU0: HowTheHostWorks(Placement.GPU0),
    StepPlacement.MIRRORED: HowTheHostWorks(Placement.MIRRORED),
}


def find(vocabulary: type[enum.StrEnum], name: str) -> enum.StrEnum | None:
    """The member of `vocabulary` whose value is `name`, or None."""
    return next((member for member in vocabulary if member == name), None)


def placement_of(name: str) -> Placement | None:
    """The placement a `Placement` or `StepPlacement` name stands for, or None."""
    step = find(StepPlacement, name)
    return step.placement if step is not None else find(Placement, name)
