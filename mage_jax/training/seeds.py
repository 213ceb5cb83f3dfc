"""Several training seeds as one program: `config.train.num_seeds` = N.

With N > 1 every train state is N independent states stacked on a leading seed axis, and every
update, validation and policy call is `jax.vmap`ped over it (stage 1's update on CPU: one copy per
seed, `unrolls_stage`), so N models train in one compiled program. Seed i is training seed
`config.seed + i`, and its keys are exactly those a one-seed run of that seed derives, so seed i of
an N-seed run equals that run up to the rounding of batched matmuls. With N = 1 nothing is stacked
and a run is what it always was (its checkpoints included).

The seed axis is sharded over the mesh's `seed` axis (`train.seed_shards` devices), the batch of
each seed over its `data` axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mage_jax.training.sharding import SEED_AXIS, replicated


def training_seeds(config: ml_collections.ConfigDict) -> list[int]:
    """`config.seed + i` for i < train.num_seeds."""
    return [int(config.seed) + i for i in range(int(config.train.get("num_seeds", 1)))]


def is_stacked(config: ml_collections.ConfigDict) -> bool:
    return len(training_seeds(config)) > 1


def stage_keys(config: ml_collections.ConfigDict, salt: int) -> list[jax.Array]:
    """Per training seed, `fold_in(PRNGKey(seed), salt)`: a stage's key stream."""
    return [jax.random.fold_in(jax.random.PRNGKey(s), salt) for s in training_seeds(config)]


def stack(values: Sequence) -> jax.Array | object:
    """Per-seed values -> one stacked value, or the only value itself for one seed."""
    if len(values) == 1:
        return values[0]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *values)


def split_keys(keys: Sequence[jax.Array]) -> tuple:
    """Per-seed keys -> (init keys, train keys), each stacked like `stack`."""
    pairs = [jax.random.split(k) for k in keys]
    return stack([p[0] for p in pairs]), stack([p[1] for p in pairs])


def per_seed(fn: Callable, stacked: bool, in_axes=0, unroll: bool = False) -> Callable:
    """`fn` over the seed axis when stacked, else `fn`: vmapped (the seed axis sharded on the mesh's
    `seed` axis), or with `unroll` one copy of `fn` per seed in the same program, stacked after."""
    if not stacked:
        return fn
    if not unroll:
        return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=SEED_AXIS)

    def unrolled(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        mapped = [a for a, axis in zip(args, axes, strict=True) if axis == 0 and jax.tree.leaves(a)]
        count = jax.tree.leaves(mapped[0])[0].shape[0]
        outs = [fn(*(jax.tree.map(lambda x, i=i: x[i], a) if axis == 0 else a
                     for a, axis in zip(args, axes, strict=True))) for i in range(count)]
        return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *outs)

    return unrolled


def unrolls_stage(stage: str) -> bool:
    """Whether a stacked stage runs its seeds unrolled instead of vmapped on this backend. On CPU the
    vmapped autoencoder update ran at 0.65-0.68x its seeds' one-seed throughput (XLA:CPU turns
    convolutions with per-seed kernels into grouped convolutions), while the transformer's update and
    `act` gained 1.1-1.5x (benchmarks/THROUGHPUT.md#training-seeds)."""
    return stage == "autoencoder" and jax.default_backend() == "cpu"


def state_sharding(mesh: Mesh, stacked: bool) -> NamedSharding:
    """Where a train state lives: every leaf's leading (seed) axis over the mesh's `seed` axis when
    stacked, else replicated."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS)) if stacked else replicated(mesh)


def select(tree, index: int, stacked: bool):
    """Seed `index`'s slice of a stacked pytree (the tree itself when not stacked)."""
    return jax.tree.map(lambda x: x[index], tree) if stacked else tree


def current_step(state) -> int:
    """A train state's step (every seed of a stacked state is at the same step)."""
    return int(np.max(jax.device_get(state.step)))
