"""One device mesh for the whole run: (`seed`, `data`). Training seeds (`train.num_seeds`) are split
over `seed`, each seed's batch over `data`; with one seed shard (the default) it is plain data
parallelism, the batch sharded on `data` and the state replicated.

This is the current jit-with-shardings form of pmap-style data parallelism. On a multi-host TPU pod
`maybe_initialize_distributed()` connects the hosts first, so the mesh spans every device of every host.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

SEED_AXIS, DATA_AXIS = "seed", "data"


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """Join the multi-process runtime when launched as one process of several.

    With `coordinator_address`, `num_processes` and `process_id` given (the launcher's flags of the
    same names) the processes are wired by hand, e.g. several processes on one machine or GPU hosts
    without a cluster manager. Without them, JAX detects Cloud TPU pods and SLURM itself. On CPU the
    processes exchange collectives over gloo (TCP), JAX's default.
    """
    if coordinator_address is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    else:
        multi_host_markers = ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri")
        if jax.distributed.is_initialized() or not any(os.environ.get(m) for m in multi_host_markers):
            return
        hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
        if "TPU_WORKER_HOSTNAMES" in os.environ and "," not in hostnames:
            return  # a single-host TPU VM also sets this variable
        jax.distributed.initialize()
    logging.info("jax.distributed initialised: process %d of %d",
                 jax.process_index(), jax.process_count())


def is_main_process() -> bool:
    """Process 0 writes files, logs metrics and draws plots; the others compute alongside it."""
    return jax.process_index() == 0


def sync_processes(name: str) -> None:
    """Barrier across processes (a no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (one host's SIGTERM stops all of them at the
    same step); a host round-trip, so call it between jitted calls only."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def make_data_mesh(devices=None, seed_shards: int = 1) -> Mesh:
    """A (`seed`, `data`) mesh over `devices` (default: all devices of all processes): `seed_shards`
    devices along `seed` (`train.seed_shards`), the rest along `data`; both axes Auto."""
    devices = np.asarray(jax.devices() if devices is None else devices).reshape(-1)
    if seed_shards < 1 or devices.size % seed_shards:
        raise ValueError(f"train.seed_shards={seed_shards} must divide the {devices.size} devices")
    return Mesh(devices.reshape(seed_shards, -1), (SEED_AXIS, DATA_AXIS),
                axis_types=(AxisType.Auto, AxisType.Auto))


def data_shards(mesh: Mesh) -> int:
    """Devices along `data`: what a batch (per seed) is split over."""
    return int(mesh.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Shards the leading (batch) axis over `data`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_array(value, sharding: NamedSharding) -> jax.Array:
    """A host value that is the same on every process -> a global array with `sharding` (each
    process fills only the shards of its own devices)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    n = data_shards(mesh)
    if batch_size % n:
        raise ValueError(
            f"{what} = {batch_size} is not divisible by the {n} devices of the mesh's data axis; "
            f"set it to a multiple of {n} (e.g. --config.{what}={n * max(1, batch_size // n)})."
        )
