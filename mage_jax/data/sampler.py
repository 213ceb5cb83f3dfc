"""On-device episode arrays and a jit-able sampler of horizon-H training windows.

`make_segment_data` normalises the states, pads every episode by `max_horizon` extra steps (final
state repeated, zero RTG and action) and puts the arrays on device once. `sample_segments` then
draws window starts uniformly over all real steps of all episodes (so episodes are weighted by
length) and cuts the windows with `vmap(lax.dynamic_slice)`; the padding guarantees a window never
reaches into another episode, and `mask` marks the steps past the episode's end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mage_jax.data.episodes import EpisodeArrays
from mage_jax.data.normalization import NormStats
from mage_jax.training.sharding import global_array

DEFAULT_MAX_HORIZON = 256  # longest window sample_segments may cut (the episode padding)


@struct.dataclass
class SegmentData:
    """Padded episode arrays on device; leading axis = episode, second = step."""

    states: jax.Array  # (N, L + P, S) float32 normalised states
    returns_to_go: jax.Array  # (N, L + P) float32 scaled returns-to-go, 0 past the end
    actions: jax.Array  # (N, L + P, A) float32, 0 past the end
    lengths: jax.Array  # (N,) int32 real steps per episode
    episode_starts: jax.Array  # (N,) int32 global index of each episode's first step
    episode_ends: jax.Array  # (N,) int32 cumulative step counts (episode_ends[-1] = total steps)
    max_horizon: int = struct.field(pytree_node=False, default=DEFAULT_MAX_HORIZON)  # P

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[-1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[-1])


def make_segment_data(episodes: EpisodeArrays, stats: NormStats,
                      max_horizon: int = DEFAULT_MAX_HORIZON,
                      sharding: jax.sharding.Sharding | jax.Device | None = None) -> SegmentData:
    """Normalise, pad by `max_horizon` steps, and place on device (default: the default device).

    `sharding` may be a jax Sharding (e.g. a replicated NamedSharding over a mesh; built with
    `global_array` so it also works across hosts) or a single Device.
    """
    if max_horizon < 1:
        raise ValueError(f"max_horizon must be >= 1, got {max_horizon}")
    pad = ((0, 0), (0, max_horizon))
    states = np.asarray(stats.normalize(episodes.observations), np.float32)
    lengths = episodes.lengths.astype(np.int32)
    ends = np.cumsum(lengths, dtype=np.int64)
    if ends[-1] >= np.iinfo(np.int32).max:
        raise ValueError(f"{ends[-1]} steps do not fit the int32 step index of the sampler")
    host = SegmentData(
        states=np.pad(states, pad + ((0, 0),), mode="edge"),  # repeats the final state
        returns_to_go=np.pad(episodes.returns_to_go.astype(np.float32), pad),
        actions=np.pad(episodes.actions.astype(np.float32), pad + ((0, 0),)),
        lengths=lengths,
        episode_starts=(ends - lengths).astype(np.int32),
        episode_ends=ends.astype(np.int32),
        max_horizon=int(max_horizon),
    )
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: global_array(x, sharding), host)
    return jax.device_put(host, sharding)


def sample_segments(data: SegmentData, key: jax.Array, batch_size: int, horizon: int) -> dict:
    """Draw `batch_size` windows of `horizon` steps; jit-able with batch_size, horizon static.

    Returns (B = batch_size, H = horizon, S states, A actions):
      states (B, H, S), returns_to_go (B, H), actions (B, H, A), mask (B, H) float32 (1 on real
      steps), first_action (B, A) (the inverse-dynamics target), segments (B, H, 1 + S) =
      [RTG, states] (the autoencoder input; channel 0 is the RTG), episode (B,) and start (B,)
      int32 (where each window was cut). Past an episode's end: final state, RTG 0, action 0.
    """
    if horizon > data.max_horizon:
        raise ValueError(f"horizon {horizon} exceeds the {data.max_horizon} padding steps of the "
                         f"segment data; build it with make_segment_data(..., max_horizon="
                         f"{horizon}) or more")
    total_steps = data.episode_ends[-1]
    step = jax.random.randint(key, (batch_size,), 0, total_steps, dtype=jnp.int32)
    episode = jnp.searchsorted(data.episode_ends, step, side="right").astype(jnp.int32)
    start = step - data.episode_starts[episode]

    def window(array, ep, t):
        starts = (ep, t) + (0,) * (array.ndim - 2)
        sizes = (1, horizon) + array.shape[2:]
        return jax.lax.dynamic_slice(array, starts, sizes)[0]

    def cut(array):
        return jax.vmap(window, in_axes=(None, 0, 0))(array, episode, start)

    states, rtg, actions = cut(data.states), cut(data.returns_to_go), cut(data.actions)
    mask = (start[:, None] + jnp.arange(horizon)[None, :]
            < data.lengths[episode][:, None]).astype(jnp.float32)
    rtg = rtg * mask  # already 0 there; kept so hand-built SegmentData behaves the same
    actions = actions * mask[..., None]
    return {
        "states": states,
        "returns_to_go": rtg,
        "actions": actions,
        "mask": mask,
        "first_action": actions[:, 0],
        "segments": jnp.concatenate([rtg[..., None], states], axis=-1),
        "episode": episode,
        "start": start,
    }
