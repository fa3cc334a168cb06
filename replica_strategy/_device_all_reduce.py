"""How the replica devices all-reduce among themselves (with `mirror_weights=True`).

The rule is MirroredStrategy's local choice (`cross_device_ops.select_cross_device_ops`): NCCL
when every replica device is a GPU and NCCL can run (its kernel is registered and no physical
GPU is split into logical ones), else a reduction onto the first replica device. Written out
here, instead of calling TF's function, so the choice is a pure function of device names that
tests can check on machines without GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

from tensorflow.python.distribute import cross_device_ops as cross_device_ops_lib
from tensorflow.python.eager import context
from tensorflow.python.framework import device as device_lib
from tensorflow.python.framework import kernels


def choose(devices: Sequence[str], nccl_available: bool) -> cross_device_ops_lib.CrossDeviceOps:
    """The `CrossDeviceOps` that all-reduces among `devices`.

    Args:
      devices: the replica devices, in replica order.
      nccl_available: whether NCCL can run in this process (`nccl_available()`).

    Returns:
      `NcclAllReduce` when every device is a GPU and `nccl_available`; else
      `ReductionToOneDevice` onto `devices[0]`.
    """
    if nccl_available and all(_is_gpu(device) for device in devices):
        return cross_device_ops_lib.NcclAllReduce(num_packs=1)
    return cross_device_ops_lib.ReductionToOneDevice(reduce_to_device=devices[0])


def nccl_available() -> bool:
    """Whether this process can run NCCL all-reduces, as MirroredStrategy decides it."""
    gpus = context.context().list_logical_devices(device_type="GPU")
    if len(gpus) != len(context.context().list_physical_devices(device_type="GPU")):
        return False  # NCCL does not run on logical GPUs split from one physical GPU.
    return bool(kernels.get_registered_kernels_for_op("NcclAllReduce"))


def _is_gpu(device: str) -> bool:
    return device_lib.DeviceSpec.from_string(device).device_type == "GPU"
