"""A held-out validation split of whole episodes (fixed fraction, fixed seed).

Whole episodes are held out, never windows of a training episode, so validation metrics measure
generalisation to trajectories the model has not seen. The split depends only on the number of
episodes, `val_fraction` and `seed`: every run on the same dataset holds out the same episodes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mage_jax.data.episodes import EpisodeArrays


def validation_episode_indices(num_episodes: int, val_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out episodes: round(fraction * N), at least 1 when the fraction is
    positive, and always leaving at least one training episode (none held out when N < 2)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0 or num_episodes < 2:
        return np.zeros((0,), np.int64)
    count = min(max(1, round(val_fraction * num_episodes)), num_episodes - 1)
    order = np.random.default_rng(seed).permutation(num_episodes)
    return np.sort(order[:count])


def _take(episodes: EpisodeArrays, indices: np.ndarray) -> EpisodeArrays:
    longest = int(episodes.lengths[indices].max())
    cut = lambda x: x[indices, :longest]
    return dataclasses.replace(
        episodes, observations=cut(episodes.observations), actions=cut(episodes.actions),
        rewards=cut(episodes.rewards), returns_to_go=cut(episodes.returns_to_go),
        lengths=episodes.lengths[indices])


def split_episodes(episodes: EpisodeArrays, val_fraction: float, seed: int
                   ) -> tuple[EpisodeArrays, EpisodeArrays | None]:
    """(training episodes, held-out episodes or None when nothing is held out)."""
    held_out = validation_episode_indices(episodes.num_episodes, val_fraction, seed)
    if held_out.size == 0:
        return episodes, None
    train = np.setdiff1d(np.arange(episodes.num_episodes), held_out)
    return _take(episodes, train), _take(episodes, held_out)
