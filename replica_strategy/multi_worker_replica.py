"""`MultiWorkerReplicaStrategy`: ReplicaStrategy on each machine, hosts all-reducing across them."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from tensorflow.python.distribute import collective_util, distribute_lib
from tensorflow.python.distribute.cluster_resolver import tfconfig_cluster_resolver

from replica_strategy import _adapters, _worker_group
from replica_strategy import devices as devices_lib
from replica_strategy import split as split_lib
from replica_strategy._multi_worker_extended import MultiWorkerReplicaExtended
from replica_strategy.strategy import ReplicaStrategy


class MultiWorkerReplicaStrategy(ReplicaStrategy):
    """`ReplicaStrategy` across machines: one copy of the weights per machine.

    Each worker (one process per machine, described by `TF_CONFIG` as for
    `tf.distribute.MultiWorkerMirroredStrategy`) runs `ReplicaStrategy` on its own `devices`:
    its variables once on its `parameter_device`, each batch split among its replicas. The
    workers' hosts then all-reduce the worker-summed gradients (and every other cross-replica
    reduction) with TensorFlow's collective ops over one CPU per worker, and every worker
    applies the same update. Initial values are broadcast from the chief. Datasets given to
    `experimental_distribute_dataset` are auto-sharded across workers (as under
    MultiWorkerMirroredStrategy) and each worker's part split among its replicas. See
    docs/multi_worker.md.

    ```python
    strategy = replica_strategy.MultiWorkerReplicaStrategy(["/cpu:0", "/cpu:1"])  # TF_CONFIG
    with strategy.scope():
        model = make_model()
    model.fit(dataset)  # dataset: global batches
    ```

    Keras 3's `fit`, `evaluate` and `predict` work as under MultiWorkerMirroredStrategy:
    `predict` returns every worker's rows, in the dataset's order, on every worker.

    With no `TF_CONFIG` (or an empty cluster) it is `ReplicaStrategy` on this machine.
    `num_replicas_in_sync` counts every worker's replicas; `replica_id_in_sync_group` is a
    replica's index on its own worker; `extended.worker_index` and `extended.num_workers` say
    which worker.

    Args:
      devices: this worker's replica devices, as `ReplicaStrategy` takes them (None: every
        local GPU, else the CPU). Every worker must have as many.
      cluster_resolver: where the cluster is read; default `TFConfigClusterResolver()`.
      communication_options: a `tf.distribute.experimental.CommunicationOptions` for the
        collectives between workers (implementation, `bytes_per_pack`, `timeout_seconds`).
      mirror_weights, split, parameter_device: as for `ReplicaStrategy` (split "even" only
        across several workers, for now).
      heartbeat_timeout_seconds: how long the coordination service waits for a silent worker
        before it declares it dead and stops the others with an error.

    Raises:
      ValueError: for a cluster with `ps` or `evaluator` tasks, a TF_CONFIG without a task or
        with a task outside its cluster, and workers that disagree on the number of local
        devices, `mirror_weights`, `split` or the variables they create (the error names the
        disagreement); also for the arguments `ReplicaStrategy` rejects.
      RuntimeError: when the task's server cannot start (its port in use, say), or TensorFlow's
        runtime started before the strategy was made.
    """

    def __init__(
        self,
        devices: Sequence[int | str] | None = None,
        *,
        cluster_resolver=None,
        communication_options: tf.distribute.experimental.CommunicationOptions | None = None,
        mirror_weights: bool = False,
        split: str | Sequence[float] = "even",
        parameter_device: str = "/cpu:0",
        heartbeat_timeout_seconds: float = 30.0,
    ):
        if communication_options is None:
            communication_options = tf.distribute.experimental.CommunicationOptions()
        if not isinstance(communication_options, collective_util.Options):
            raise ValueError(
                "`communication_options` must be a tf.distribute.experimental."
                f"CommunicationOptions. Received: communication_options={communication_options!r}"
            )
        if not isinstance(mirror_weights, bool):
            raise ValueError(
                f"`mirror_weights` must be True or False. Received: mirror_weights={mirror_weights!r}"
            )
        if (
            isinstance(heartbeat_timeout_seconds, bool)
            or not isinstance(heartbeat_timeout_seconds, (int, float))
            or not heartbeat_timeout_seconds > 0
        ):
            raise ValueError(
                "`heartbeat_timeout_seconds` must be a positive number of seconds. Received: "
                f"heartbeat_timeout_seconds={heartbeat_timeout_seconds!r}"
            )
        resolver = cluster_resolver or tfconfig_cluster_resolver.TFConfigClusterResolver()
        group = _worker_group.join(resolver, heartbeat_timeout_seconds)
        if group is None:
            compute_devices = devices_lib.resolve_devices(devices)
            parameter_device = devices_lib.resolve_device(parameter_device, "parameter_device")
        else:
            compute_devices = _worker_group.local_devices(group, devices)
            parameter_device = _worker_group.local_device(
                group, parameter_device, "parameter_device"
            )
        split = split_lib.parse_split(split, len(compute_devices))
        distribute_lib.Strategy.__init__(
            self,
            MultiWorkerReplicaExtended(
                self,
                group,
                compute_devices,
                parameter_device,
                parameter_device,
                mirror_weights,
                split,
                communication_options,
            ),
        )
        distribute_lib.distribution_strategy_gauge.get_cell("V2").set("MultiWorkerReplicaStrategy")
        _adapters.install()

    def reduce(self, reduce_op, value, axis=None):
        """As `ReplicaStrategy.reduce`, across every worker; scalars ignore `axis`.

        Keras 3 reduces its logs with `axis=0` under several workers (as it does for
        MultiWorkerMirroredStrategy, keras-team/keras#20585); a scalar has no axis 0, so it is
        reduced across replicas.
        """
        if axis is None:
            return super().reduce(reduce_op, value, axis)

        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return super(MultiWorkerReplicaStrategy, self).reduce(
                reduce_op, leaf, None if rank == 0 else axis
            )

        return tf.nest.map_structure(reduce_leaf, value)

    @property
    def num_replicas_in_sync(self) -> int:
        """Every worker's replicas: workers x local replicas."""
        return self.extended.global_replica_count

    def __repr__(self) -> str:
        return (
            f"MultiWorkerReplicaStrategy(worker {self.extended.worker_index} of "
            f"{self.extended.num_workers}, devices={list(self.extended.worker_devices)}, "
            f"parameter_device={self.parameter_device!r}"
            f"{', mirror_weights=True' if self.mirror_weights else ''})"
        )
