"""A batched `act` over evaluation seeds, sharded on the mesh's `data` axis.

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
from jax.sharding import Mesh

from mage_jax.training import sharding as sharding_lib
from mage_jax.training.sharding import global_array


def shard_policy(act: Callable, params: Any, mesh: Mesh) -> Callable:
    """policy(observations (N, S), returns_to_go (N,), key) -> numpy actions of act's shape."""
    batch = sharding_lib.batch_sharded(mesh)
    replicated = sharding_lib.replicated(mesh)
    sharded_act = jax.jit(act, in_shardings=(replicated, batch, batch, replicated),
                          out_shardings=replicated)

    def policy(observations, returns_to_go, key) -> np.ndarray:
        observations, returns_to_go = np.asarray(observations), np.asarray(returns_to_go)
        n = observations.shape[0]
        pad = -n % mesh.size
        if pad:  # copies of the first seed; their actions are dropped
            observations = np.concatenate([observations, np.repeat(observations[:1], pad, 0)])
            returns_to_go = np.concatenate([returns_to_go, np.repeat(returns_to_go[:1], pad, 0)])
        actions = sharded_act(params, global_array(observations, batch),
                              global_array(returns_to_go, batch),
                              global_array(jax.device_get(key), replicated))
        return np.asarray(actions)[:n]

    policy.jitted = sharded_act  # for inspecting the compiled program
    return policy
