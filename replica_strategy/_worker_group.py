"""Joins this process to the TF_CONFIG cluster of a `MultiWorkerReplicaStrategy`.

The set-up is MultiWorkerMirroredStrategy's (`CollectiveAllReduceExtended._initialize_multi_worker`
in TensorFlow's collective_all_reduce_strategy.py): collective ops configured with a collective
leader, the coordination service (whose heartbeat detects a dead worker), then
`enable_collective_ops(server_def)`, which starts this task's gRPC server. It happens once per
process, before TensorFlow's runtime initializes; a second strategy in the same process joins the
same cluster again only if it names the same one.

`WorkerGroup.agree` compares a value across every worker through the coordination service's
key-value store, so that workers built differently fail at start-up with an error that names
the difference, instead of hanging in their first collective.
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow as tf
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.core.protobuf import tensorflow_server_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context

from replica_strategy import devices as devices_lib

_WORKER_JOBS = ("chief", "worker")
# How long a worker waits for the others' answer to a start-up check. Every worker has joined
# the cluster by then (the coordination service waits for all at start-up), so only a worker
# that took another path through the program makes it wait.
AGREEMENT_TIMEOUT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class WorkerGroup:
    """This process's place in the cluster."""

    cluster: dict
    task_type: str
    task_id: int
    worker_index: int  # 0 for the chief; the position in the collective group.
    num_workers: int

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def task_prefix(self) -> str:
        return f"/job:{self.task_type}/replica:0/task:{self.task_id}"

    @property
    def host_device(self) -> str:
        return f"{self.task_prefix}/device:CPU:0"

    def tasks(self) -> list[tuple[str, int]]:
        """Every (job, index) of the cluster, chief first: the order of `worker_index`."""
        return [
            (job, index) for job in _WORKER_JOBS for index in range(len(self.cluster.get(job, ())))
        ]

    def agree(self, topic: str, key: str, value) -> None:
        """Raises on every worker when any two workers' `value` for `topic` differ.

        Each worker publishes `value` (as JSON) under `key` in the coordination service's
        key-value store, then compares it with every other worker's.
        """
        ctx = context.context()
        mine = json.dumps(value, sort_keys=True, default=str)
        ctx.set_config_key_value(f"replica_strategy/{key}/{self.task_type}/{self.task_id}", mine)
        for task_type, task_id in self.tasks():
            if (task_type, task_id) == (self.task_type, self.task_id):
                continue
            try:
                theirs = ctx.get_config_key_value(
                    f"replica_strategy/{key}/{task_type}/{task_id}",
                    int(AGREEMENT_TIMEOUT_SECONDS * 1000),
                )
            except tf.errors.OpError as error:
                raise RuntimeError(
                    f"MultiWorkerReplicaStrategy: worker {self.task_type}:{self.task_id} waited "
                    f"{AGREEMENT_TIMEOUT_SECONDS:.0f} s for {topic} from worker "
                    f"{task_type}:{task_id} and got none ({type(error).__name__}). Every "
                    "worker must build the same strategy and model, in the same order."
                ) from error
            if theirs != mine:
                raise ValueError(
                    f"MultiWorkerReplicaStrategy: the workers disagree on {topic}: worker "
                    f"{task_type}:{task_id} has {theirs}, worker {self.task_type}:"
                    f"{self.task_id} (this one) has {mine}. Every worker must build the same "
                    "strategy and model (same number of devices, mirror_weights, split and "
                    "variables)."
                )


_joined: WorkerGroup | None = None


def join(cluster_resolver, heartbeat_timeout_seconds: float) -> WorkerGroup | None:
    """Joins the cluster `cluster_resolver` describes; None when it describes none.

    Raises:
      ValueError: for a cluster with tasks other than chief and worker, no task or a task
        outside the cluster, or a cluster other than the one this process joined already.
      RuntimeError: when TensorFlow's runtime already started, or this task's server cannot
        start (its port in use, say).
    """
    global _joined
    cluster = {
        job: list(tasks) if isinstance(tasks, (list, tuple)) else tasks
        for job, tasks in cluster_resolver.cluster_spec().as_dict().items()
    }
    if not cluster:
        return None
    group = _describe(cluster, cluster_resolver.task_type, cluster_resolver.task_id)
    if _joined is not None:
        if _joined != group:
            raise ValueError(
                "MultiWorkerReplicaStrategy: this process joined the cluster "
                f"{_joined.cluster} as {_joined.task_type}:{_joined.task_id} already; it "
                f"cannot join {group.cluster} as {group.task_type}:{group.task_id}. Collective "
                "ops are enabled once per process."
            )
        return _joined
    _start(group, cluster_resolver, heartbeat_timeout_seconds)
    _joined = group
    return group


def _describe(cluster: dict, task_type, task_id) -> WorkerGroup:
    others = sorted(set(cluster) - set(_WORKER_JOBS))
    if others:
        raise ValueError(
            "MultiWorkerReplicaStrategy trains with chief and worker tasks only; the cluster "
            f"in TF_CONFIG also has {others}. Parameter servers ('ps') and a side-car "
            "'evaluator' belong to other strategies: remove them from the cluster (evaluate "
            f"in a separate job). Received: cluster={cluster}"
        )
    if task_type is None or task_id is None:
        raise ValueError(
            "MultiWorkerReplicaStrategy: TF_CONFIG has a cluster but no task: set "
            '"task": {"type": "worker", "index": i} in each worker\'s TF_CONFIG. '
            f"Received: task_type={task_type!r}, task_id={task_id!r}"
        )
    if task_type not in cluster or not 0 <= task_id < len(cluster[task_type]):
        raise ValueError(
            f"MultiWorkerReplicaStrategy: TF_CONFIG's task {task_type}:{task_id} is not in "
            f"its cluster {cluster}: the task type must be a job of the cluster and the index "
            "below the number of addresses listed for it."
        )
    tasks = [(job, index) for job in _WORKER_JOBS for index in range(len(cluster.get(job, ())))]
    return WorkerGroup(
        cluster=cluster,
        task_type=task_type,
        task_id=task_id,
        worker_index=tasks.index((task_type, task_id)),
        num_workers=len(tasks),
    )


def _start(group: WorkerGroup, cluster_resolver, heartbeat_timeout_seconds: float) -> None:
    ctx = context.context()
    cluster_spec = multi_worker_util.normalize_cluster_spec(cluster_resolver.cluster_spec())
    if ctx._context_handle is not None:  # pylint: disable=protected-access
        raise RuntimeError(
            "MultiWorkerReplicaStrategy must be created before TensorFlow's runtime starts "
            "(before any op runs or any logical device is listed): collective ops and the "
            "coordination service are configured at start-up. Create the strategy first; to split "
            "the CPU into logical devices, call tf.config.set_logical_device_configuration "
            "before it (not split_cpu, which lists the devices)."
        )
    ctx.configure_collective_ops(
        collective_leader=multi_worker_util.collective_leader(
            cluster_spec, group.task_type, group.task_id
        ),
        scoped_allocator_enabled_ops=("CollectiveReduce",),
        device_filters=(f"/job:{group.task_type}/task:{group.task_id}",),
    )
    if ctx.coordination_service is None:
        ctx.configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(cluster_spec),
            heartbeat_timeout_in_ms=int(heartbeat_timeout_seconds * 1000),
            coordinated_jobs=[
                coordination_config_pb2.CoordinatedJob(
                    name=job, num_tasks=cluster_spec.num_tasks(job)
                )
                for job in _WORKER_JOBS
                if job in cluster_spec.jobs
            ],
        )
    server_def = tensorflow_server_pb2.ServerDef(
        cluster=cluster_spec.as_cluster_def(),
        default_session_config=ctx.config,
        job_name=group.task_type,
        task_index=group.task_id,
        protocol=cluster_resolver.rpc_layer or "grpc",
        port=getattr(cluster_resolver, "port", 0) or 0,
    )
    address = group.cluster[group.task_type][group.task_id]
    try:
        ctx.enable_collective_ops(server_def)
        ctx.ensure_initialized()
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        raise RuntimeError(
            f"MultiWorkerReplicaStrategy: task {group.task_type}:{group.task_id} could not "
            f"start its server at {address} ({error}). Check that the port is free and the "
            "address is this machine's."
        ) from error


def local_devices(group: WorkerGroup, devices) -> tuple[str, ...]:
    """`devices` (as ReplicaStrategy takes them) as full names of this task's devices."""
    available = [
        device.name
        for device in tf.config.list_logical_devices()
        if device.name.startswith(group.task_prefix + "/")
    ]
    if devices is None:
        gpus = [name for name in available if "/device:GPU:" in name]
        return tuple(gpus) if gpus else (group.host_device,)
    if isinstance(devices, (str, int)) or not devices:
        raise ValueError(
            "`devices` must be None or a non-empty list of this worker's GPU ids or device "
            f"names, e.g. ['/cpu:0', '/cpu:1']. Received: devices={devices!r}"
        )
    names = tuple(
        group.task_prefix + devices_lib.device_name(device, "devices", devices)
        for device in devices
    )
    devices_lib.check_no_duplicates(names, "devices", devices)
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"`devices` names devices this worker does not have: {missing}. Available: "
            f"{available}. Received: devices={devices!r}"
        )
    return names


def local_device(group: WorkerGroup, device: str, argument: str) -> str:
    return group.task_prefix + devices_lib.canonical_name(device, argument)
