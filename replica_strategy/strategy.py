"""`ReplicaStrategy`: the public strategy class. The work is done in `_extended.py`."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from tensorflow.python.distribute import distribute_lib

from replica_strategy import _adapters
from replica_strategy import devices as devices_lib
from replica_strategy import split as split_lib
from replica_strategy._extended import ReplicaExtended


class ReplicaStrategy(distribute_lib.Strategy):
    """Data parallelism on one machine with the weights kept once, on a parameter device.

    `ReplicaStrategy` is `multi_gpu_model` as a `tf.distribute.Strategy`. Models, optimizers and
    metrics built in `strategy.scope()` keep ONE copy of each trainable variable on
    `parameter_device` (the CPU by default), whatever the number of replicas, with optimizer
    slots beside them. Every global batch is split into contiguous sub-batches, one replica runs
    on each device, and results are merged on `merge_device`: gradients summed and applied once
    to the one copy, predictions concatenated back in the original sample order.

    The split: with B rows on N replicas, replica 0, 1, ... in turn take ceil(B / N) rows until
    the batch runs out, exactly as tf.distribute rebatches for MirroredStrategy (10 rows on 4
    replicas: 3, 3, 3, 1; 2 rows on 4: 1, 1, 0, 0). A replica with no rows still runs: what it
    computes counts (its share of a regularization loss, say), except what an empty batch makes
    non-finite (the NaN of a mean over no rows, as in BatchNormalization), which counts as zero.
    With `split` (see Args) the batch is shared in other proportions, for devices of
    different speeds.

    Keras and custom loops run unchanged (here on two logical CPUs, see the README):

    ```python
    strategy = replica_strategy.ReplicaStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    x, y = tf.random.normal([256, 4]), tf.random.normal([256, 1])
    model.fit(x, y, batch_size=64, verbose=0)  # Each step: 32 rows on each device, one update.

    def replica_id():
        return tf.distribute.get_replica_context().replica_id_in_sync_group

    print(strategy.experimental_local_results(strategy.run(replica_id)))  # (0, 1), as tensors
    print(strategy.gather(strategy.run(lambda: tf.fill([2], replica_id())), axis=0))  # [0 0 1 1]
    ```

    Variables with `synchronization=ON_READ` (metrics) keep one copy per replica and are summed
    or averaged when read, as under MirroredStrategy. Checkpoints hold plain variables, so they
    load into a run with no strategy or with MirroredStrategy, and back.

    With `mirror_weights=True` the placement is ZeRO-Offload's: each trainable variable has
    its master copy once on `parameter_device`, with the optimizer state (slots) beside it and
    nowhere else, plus a working copy on each replica device. Forward and backward passes read
    the local working copy. Gradients are all-reduced among the replica devices (NCCL when
    every replica device is a GPU and NCCL runs, as MirroredStrategy chooses; else a sum on
    the first replica device); one copy of each summed gradient goes to `parameter_device`,
    where the optimizer updates the master once; the new value goes to one replica device
    and is relayed from there to the others. Per step and P bytes of trainable weights,
    about 2 P cross the host's link instead of 2 N P, at the price of one copy of the
    weights (not of the optimizer state) per device. Everything else behaves as with
    `mirror_weights=False`: non-trainable variables (e.g. BatchNormalization statistics)
    stay once on `parameter_device`, metrics per replica, replica-context writes are
    aggregated the same way, and training gives the same weights. Checkpoints and saved
    models hold the master alone, so files interchange with either mode, MirroredStrategy,
    and no strategy. Any all-reduce whose result goes back to the replicas (including one a
    custom loop calls through `ReplicaContext.all_reduce`) runs among the replica devices;
    `strategy.reduce` and `gather` still end on `merge_device`.

    ```python
    strategy = replica_strategy.ReplicaStrategy(
        ["/gpu:0", "/gpu:1"], parameter_device="/cpu:0", mirror_weights=True
    )
    ```

    Args:
      devices: where replicas run. None: every logical GPU, or the CPU alone (with a logged
        warning) when there is none. A list of ints: those GPU ids. A list of strings: those
        devices, e.g. ["/cpu:0", "/cpu:1"] for logical CPUs.
      parameter_device: where the one copy of each variable lives and updates run.
      merge_device: where gradients are summed (with `mirror_weights`, among the replicas
        instead) and results gathered; defaults to `parameter_device`.
      mirror_weights: keep a working copy of each trainable variable on every replica device
        (see above). False (the default): replicas read the one copy on `parameter_device`.
      split: how each batch is shared among the replica devices. "even" (the default): the
        rule above. A list or tuple of positive weights, one per device in the order of
        `devices`: each batch of B rows is cut in proportion, every replica within one row of
        B * w_i / sum(w) (largest remainders get the left-over rows, ties the lower index),
        rows still contiguous and in order, so `gather(axis=0)` keeps them in order. Use it
        for devices of different speeds: `split=[2, 1]` when the first computes a row twice
        as fast. "auto": starts even, times each replica's work per row inside each step
        (`tf.timestamp` once its inputs are ready and once the values it hands to the step's
        first reduction, its gradients, are), and moves rows toward the faster devices: a
        smoothed estimate per device, a target share proportional to speed with a floor of a
        tenth of an even share; once a share is more than 0.03 from its target, moves of half
        the way each step until within 0.005; each change logged once. It learns in `tf.function` steps (Keras' `fit`, a custom
        loop's `tf.function`), not in eager `strategy.run`. Changing the split does not
        retrace: it is read from a variable in each step, and the batch dimension the step
        sees is dynamic. Under any split other than "even", datasets distributed by the
        strategy deliver every replica's rows to the host and re-split them there; the
        gradient weighs every row 1/B in custom loops that use
        `tf.nn.compute_average_loss(..., global_batch_size=B)` and in Keras models whose
        losses weigh replicas by rows. The split is how this machine runs, not model state:
        checkpoints neither hold nor restore it. `strategy.split` gives the fractions in
        force.

    Raises:
      ValueError: when a device argument is empty, has a duplicate, a wrong type, or names a
        device this process does not have (another job, replica or task included); the error
        names the argument and repeats it as passed. Also when `mirror_weights` is not a bool,
        and for a `split` with a wrong number of weights, a weight that is not positive and
        finite, or an unknown string.
      TypeError: for a `split` that is neither a string nor a list or tuple of numbers.
    """

    def __init__(
        self,
        devices: Sequence[int | str] | None = None,
        parameter_device: str = "/cpu:0",
        merge_device: str | None = None,
        mirror_weights: bool = False,
        split: str | Sequence[float] = "even",
    ):
        compute_devices = devices_lib.resolve_devices(devices)
        parameter_device = devices_lib.resolve_device(parameter_device, "parameter_device")
        merge_device = (
            parameter_device
            if merge_device is None
            else devices_lib.resolve_device(merge_device, "merge_device")
        )
        if not isinstance(mirror_weights, bool):
            raise ValueError(
                f"`mirror_weights` must be True or False. Received: mirror_weights={mirror_weights!r}"
            )
        split = split_lib.parse_split(split, len(compute_devices))
        super().__init__(
            ReplicaExtended(
                self, compute_devices, parameter_device, merge_device, mirror_weights, split
            )
        )
        distribute_lib.distribution_strategy_gauge.get_cell("V2").set("ReplicaStrategy")
        _adapters.install()

    def scope(self):
        """The strategy's scope, as `tf.distribute.Strategy.scope`.

        Entering it also adapts Keras and tf_keras where they decide about distributed training
        in their own code (`replica_strategy/_adapters.py`), tf_keras included if it was
        imported after this strategy was made.
        """
        _adapters.install()
        return super().scope()

    def reduce(self, reduce_op, value, axis=None):
        """Reduces `value` across replicas (and along `axis`); nested structures are walked.

        With `axis=0` an uneven split is exact: MEAN divides by the total number of rows. With
        `axis=None`, per-replica values of different shapes (per-example values of an uneven
        split) raise a `ValueError`: use `axis=0`, or `gather`.
        """
        if axis is None and self.extended.reducing_first_batch_to_build_now():
            # Keras 3 reduces the first batch only to read its shapes and dtypes
            # (`_keras3_trainer`). Replica 0's rows have them, with the most rows of an uneven
            # split: the model builds whatever the split, and on strings and sparse tensors,
            # which no reduction takes.
            return tf.nest.map_structure(
                lambda leaf: self.experimental_local_results(leaf)[0], value
            )
        return tf.nest.map_structure(
            lambda leaf: super(ReplicaStrategy, self).reduce(reduce_op, leaf, axis), value
        )

    def gather(self, value, axis=0):
        """Concatenates per-replica values along `axis` on the merge device, in replica order."""
        return tf.nest.map_structure(
            lambda leaf: super(ReplicaStrategy, self).gather(leaf, axis), value
        )

    @property
    def parameter_device(self) -> str:
        return self.extended.parameter_devices[0]

    @property
    def merge_device(self) -> str:
        return self.extended.merge_device

    @property
    def mirror_weights(self) -> bool:
        """Whether each replica device holds a working copy of the trainable weights."""
        return self.extended.mirror_weights

    @property
    def split(self) -> tuple[float, ...]:
        """The fractions of each batch the replicas take now, in replica order; they sum to 1.

        `(0.5, 0.5)` for an even split on two devices; with `split="auto"`, the split "auto"
        has settled on so far.
        """
        return self.extended.split_in_force

    def __repr__(self) -> str:
        return (
            f"ReplicaStrategy(devices={list(self.extended.worker_devices)}, "
            f"parameter_device={self.parameter_device!r}, merge_device={self.merge_device!r}"
            f"{', mirror_weights=True' if self.mirror_weights else ''}"
            f"{_split_repr(self.extended._split.mode)})"
        )


def _split_repr(mode) -> str:
    if mode == split_lib.EVEN:
        return ""
    if isinstance(mode, tuple):
        return f", split={tuple(round(fraction, 4) for fraction in mode)}"
    return f", split={mode!r}"


_adapters.accept(ReplicaStrategy)
