"""One data-parallel device mesh for the whole run: batch sharded on `data`, state replicated.

This is the current jit-with-shardings form of pmap-style data parallelism. On a multi-host TPU pod
`maybe_initialize_distributed()` connects the hosts first, so the mesh spans every device of every host.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Join the multi-host runtime when launched as one process of several (TPU pods, SLURM)."""
    multi_host_markers = ("TPU_WORKER_HOSTNAMES", "COORDINATOR_ADDRESS", "SLURM_NTASKS")
    if jax.process_count() > 1 or not any(os.environ.get(m) for m in multi_host_markers):
        return
    hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "TPU_WORKER_HOSTNAMES" in os.environ and "," not in hostnames:
        return  # a single-host TPU VM also sets this variable
    jax.distributed.initialize()
    logging.info("jax.distributed initialised: process %d of %d",
                 jax.process_index(), jax.process_count())


def make_data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices of all processes), with an Auto `data` axis."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Shards the leading (batch) axis over `data`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    n = mesh.size
    if batch_size % n:
        raise ValueError(
            f"{what} = {batch_size} is not divisible by the {n} devices of the mesh; "
            f"set it to a multiple of {n} (e.g. --config.{what}={n * max(1, batch_size // n)})."
        )
