"""The first lines of a run, in plain words: the strategy, its devices, where the weights live.

    Strategy: ReplicaStrategy, 2 replicas on /cpu:0, /cpu:1.
    Placement: the weights and the optimizer state once on /cpu:0 (the parameter device), ...
    Batch split: --split=even, fractions 0.500 / 0.500 of each batch on /cpu:0, /cpu:1.

Devices are written as `--devices` takes them (`replica_strategy.devices.short_name`).
"""

from __future__ import annotations

import tensorflow as tf

import replica_strategy
from examples import trainer_flags
from replica_strategy.devices import short_name


def describe_strategy(distribution: tf.distribute.Strategy) -> str:
    """Two lines: "Strategy: <class>, <n> replicas on <devices>." and "Placement: ..."."""
    if distribution is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return (
            "Strategy: none (TensorFlow's default strategy), 1 replica on the device TensorFlow "
            "picks (the first GPU, else the CPU).\n"
            "Placement: the weights, the optimizer state and every step on that device."
        )
    devices = [short_name(name) for name in distribution.extended.worker_devices]
    replicas = _count(distribution.num_replicas_in_sync, "replica")
    header = f"{type(distribution).__name__}, {replicas} on {', '.join(devices)}."
    if isinstance(distribution, replica_strategy.ReplicaStrategy):
        parameter_device = short_name(distribution.parameter_device)
        merge_device = short_name(distribution.merge_device)
        if distribution.mirror_weights:
            placement = (
                f"the master weights and the optimizer state once on {parameter_device} (the "
                "parameter device), a working copy of the trainable weights on each replica "
                "device (mirror_weights=True); gradients summed among the replica devices, "
                f"then sent once to {parameter_device}, where the optimizer steps."
            )
        else:
            summed = "there" if merge_device == parameter_device else f"on {merge_device}"
            placement = (
                f"the weights and the optimizer state once on {parameter_device} (the "
                f"parameter device), read by every replica (mirror_weights=False); gradients "
                f"summed {summed} (the merge device), the optimizer steps on {parameter_device}."
            )
    elif isinstance(distribution, tf.distribute.experimental.CentralStorageStrategy):
        parameter_device = short_name(distribution.extended.parameter_devices[0])
        placement = (
            f"the weights and the optimizer state once on {parameter_device} (the parameter "
            "device), read by every replica; gradients summed and the optimizer steps there."
        )
    elif isinstance(distribution, tf.distribute.OneDeviceStrategy):
        placement = f"the weights, the optimizer state and every step on {devices[0]}."
    elif isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        jobs = distribution.cluster_resolver.cluster_spec().as_dict()
        workers = _count(max(1, len(jobs.get("chief", [])) + len(jobs.get("worker", []))), "worker")
        header = (
            f"MultiWorkerMirroredStrategy, {replicas} across {workers}, this worker's on "
            f"{', '.join(devices)}."
        )
        placement = (
            "a copy of the weights and of the optimizer state on every replica device of every "
            "worker; gradients summed across all of them, each copy steps."
        )
    elif isinstance(distribution, tf.distribute.MirroredStrategy):
        placement = (
            "a copy of the weights and of the optimizer state on each replica device; "
            "gradients summed among them, each copy steps."
        )
    else:
        return f"Strategy: {header}"
    return f"Strategy: {header}\nPlacement: {placement}"


def describe_split(distribution: replica_strategy.ReplicaStrategy, split) -> str:
    """One line: the `--split` asked for, the fractions in force and the devices they go to."""
    devices = ", ".join(short_name(name) for name in distribution.extended.worker_devices)
    line = (
        f"Batch split: --split={trainer_flags.format_split(split)}, fractions "
        f"{fractions_text(distribution.split)} of each batch on {devices}"
    )
    if split == "auto":
        line += " (measured every step; rows move toward the faster devices)"
    return line + "."


def fractions_text(fractions) -> str:
    """Fractions of a batch as the run prints them: "0.750 / 0.250"."""
    return " / ".join(f"{fraction:.3f}" for fraction in fractions)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number > 1 else ''}"
