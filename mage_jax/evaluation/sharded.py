"""A batched `act` over evaluation seeds, sharded on the mesh's `data` axis.

With several training seeds (`stacked` params, `train.num_seeds` = N), the envs are N blocks of the
evaluation seeds (`evaluate_policy(..., repeats=N)`): `act` is vmapped over the params' seed axis and
the blocks, each training seed acting on its own block with the same key as a one-seed run, split
over the mesh's `seed` axis.

Every process steps the same envs (all seeds, identical observations), so each input is a host copy
of the global value: every device takes its slice of the seeds, and the actions come back replicated,
whole on every process. The seed batch is padded to a multiple of the device count. With JAX's
partitionable threefry (the default), the random draws do not depend on the sharding, so the actions
equal a single device's for the same batch and key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mage_jax.training import seeds
from mage_jax.training import sharding as sharding_lib
from mage_jax.training.sharding import DATA_AXIS, SEED_AXIS, global_array


def shard_policy(act: Callable, params: Any, mesh: Mesh, num_stacked: int = 0) -> Callable:
    """policy(observations (N, S), returns_to_go (N,), key) -> numpy actions of act's shape.

    `num_stacked` = M > 0: `params` are M training seeds stacked, and the N envs are M blocks.
    """
    replicated = sharding_lib.replicated(mesh)
    stacked = num_stacked > 0
    batch = (NamedSharding(mesh, PartitionSpec(SEED_AXIS, DATA_AXIS)) if stacked
             else sharding_lib.batch_sharded(mesh))
    params_sharding = seeds.state_sharding(mesh, stacked)
    sharded_act = jax.jit(seeds.per_seed(act, stacked, in_axes=(0, 0, 0, None)),
                          in_shardings=(params_sharding, batch, batch, replicated),
                          out_shardings=replicated)
    blocks = max(num_stacked, 1)

    def policy(observations, returns_to_go, key) -> np.ndarray:
        observations = np.asarray(observations).reshape(blocks, -1, *np.shape(observations)[1:])
        returns_to_go = np.asarray(returns_to_go).reshape(blocks, -1)
        n = observations.shape[1]
        pad = -n % sharding_lib.data_shards(mesh)
        if pad:  # copies of the first seed; their actions are dropped
            observations = np.concatenate([observations, np.repeat(observations[:, :1], pad, 1)], 1)
            returns_to_go = np.concatenate([returns_to_go, np.repeat(returns_to_go[:, :1], pad, 1)], 1)
        if not stacked:
            observations, returns_to_go = observations[0], returns_to_go[0]
        actions = sharded_act(params, global_array(observations, batch),
                              global_array(returns_to_go, batch),
                              global_array(jax.device_get(key), replicated))
        actions = np.asarray(actions).reshape(blocks, n + pad, *np.shape(actions)[1 + stacked:])
        return actions[:, :n].reshape(blocks * n, *actions.shape[2:])

    policy.jitted = sharded_act  # for inspecting the compiled program
    return policy
