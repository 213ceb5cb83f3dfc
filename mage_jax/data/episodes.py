"""Episodes as padded numpy arrays (episode, step, dim), with their returns-to-go.

Layout: episode i occupies steps [0, lengths[i]); beyond that its observation row repeats the last
real observation and actions, rewards and returns-to-go are zero. Minari episodes have T + 1
observations (the final one follows the last action) and T actions: the first T observations are
kept, so every stored step is a (state, action, reward) triple.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import scipy.signal
from absl import logging

from mage_jax.data.observations import flatten_observations


class DatasetContentError(ValueError):
    """The dataset's episodes cannot be trained on (NaN/inf, no steps, ragged shapes); says which one."""


@dataclasses.dataclass(frozen=True, eq=False)
class EpisodeArrays:
    """A dataset's episodes, padded to the longest one (see the module docstring for padding)."""

    observations: np.ndarray  # (N, L, S) float32 flattened states
    actions: np.ndarray  # (N, L, A) float32
    rewards: np.ndarray  # (N, L) float32
    returns_to_go: np.ndarray  # (N, L) float32, discounted and divided by rtg_scale
    lengths: np.ndarray  # (N,) int32 steps per episode, all >= 1
    action_low: np.ndarray  # (A,) float32 lower bounds of the action space
    action_high: np.ndarray  # (A,) float32 upper bounds of the action space
    num_skipped_empty: int = 0  # episodes dropped because they had no steps

    @property
    def num_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())


def returns_to_go(rewards: np.ndarray, discount: float, tail_value: float = 0.0) -> np.ndarray:
    """R_t = sum_{t' >= t} discount^(t' - t) r_t' + discount^(T - t) tail_value for one episode's
    (T,) rewards, in float64. `tail_value` is the return after the last step (0 when it ended)."""
    if not 0.0 < discount <= 1.0:
        raise ValueError(f"rtg discount must be in (0, 1], got {discount}")
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be one episode's (T,) array, got shape {rewards.shape}")
    if tail_value:
        rewards = rewards.copy()
        rewards[-1] += discount * tail_value  # the tail enters through the last step's return
    if discount == 1.0:
        return np.cumsum(rewards[::-1])[::-1].copy()
    # y[n] = x[n] + discount * y[n-1] run over the reversed rewards is the discounted tail sum.
    return scipy.signal.lfilter([1.0], [1.0, -discount], rewards[::-1])[::-1].copy()


def held_tail_value(rewards: np.ndarray, discount: float) -> float:
    """The return after a truncated episode's last step if its last reward went on forever:
    r_T / (1 - discount). Right for a goal held at truncation in a continuing task, where the return
    of the truncation step alone would make a settled ball look worse than an arriving one."""
    if not 0.0 < discount < 1.0:
        raise ValueError(f"bootstrapping a held reward needs an rtg discount in (0, 1), got {discount}")
    return float(rewards[-1]) / (1.0 - discount)


def episodes_from_minari(dataset, obs_family: str, rtg_discount: float = 1.0,
                         rtg_scale: float = 1.0, max_episodes: int | None = None,
                         rtg_bootstrap: bool = False) -> EpisodeArrays:
    """Read a MinariDataset (all episodes, or the first `max_episodes`) into EpisodeArrays.

    With `rtg_bootstrap`, an episode that ends truncated (not terminated) keeps its last reward
    forever in its returns-to-go (`held_tail_value`).

    Bad content (NaN or inf, no steps at all, ragged shapes) raises DatasetContentError naming the
    dataset, the episode and the step.
    """
    try:
        low, high = _box_bounds(dataset.action_space)
        indices = np.asarray(dataset.episode_indices)
        if max_episodes is not None:
            indices = indices[:max_episodes]
        observations, actions, rewards, truncated = [], [], [], []
        for index, episode in zip(indices, dataset.iterate_episodes(indices), strict=True):
            observations.append(_flattened(episode.observations, obs_family, int(index)))
            actions.append(episode.actions)
            rewards.append(episode.rewards)
            truncated.append(bool(len(episode.truncations)) and bool(episode.truncations[-1])
                             and not bool(episode.terminations[-1]))
        return episodes_from_lists(observations, actions, rewards, action_low=low, action_high=high,
                                   rtg_discount=rtg_discount, rtg_scale=rtg_scale,
                                   episode_ids=[int(i) for i in indices],
                                   bootstrapped=truncated if rtg_bootstrap else None)
    except DatasetContentError as e:
        dataset_id = getattr(getattr(dataset, "spec", None), "dataset_id", None)
        if dataset_id is None:
            raise
        raise DatasetContentError(f"dataset {dataset_id!r}: {e}") from e


def _flattened(observations, obs_family: str, episode_id: int) -> np.ndarray:
    try:
        return flatten_observations(observations, obs_family)
    except ValueError as e:  # observations that do not fit config.data.obs_family
        raise DatasetContentError(f"episode {episode_id}: {e}") from e


def episodes_from_lists(observations: list, actions: list, rewards: list, *,
                        action_low: np.ndarray | None = None,
                        action_high: np.ndarray | None = None, rtg_discount: float = 1.0,
                        rtg_scale: float = 1.0, max_episodes: int | None = None,
                        episode_ids: Sequence[int] | None = None,
                        bootstrapped: Sequence[bool] | None = None) -> EpisodeArrays:
    """Pack per-episode arrays into EpisodeArrays.

    Episode i has `observations[i]` of shape (T or T + 1, S) (already flattened; a final extra
    observation is dropped), `actions[i]` (T, A) and `rewards[i]` (T,). Episodes with T = 0 are
    skipped (and counted). Action bounds default to the data's per-dimension min / max.
    `episode_ids` name the episodes in error messages (default: their position in the lists).
    Episodes flagged in `bootstrapped` (truncated ones) keep their last reward forever in their
    returns-to-go (`held_tail_value`).
    """
    if not len(observations) == len(actions) == len(rewards):
        raise ValueError(f"got {len(observations)} observation, {len(actions)} action and "
                         f"{len(rewards)} reward sequences; one of each per episode is needed")
    if rtg_scale <= 0:
        raise ValueError(f"rtg_scale must be positive, got {rtg_scale}")
    if bootstrapped is not None and len(bootstrapped) != len(rewards):
        raise ValueError(f"got {len(bootstrapped)} bootstrap flags for {len(rewards)} episodes")
    ids = list(episode_ids) if episode_ids is not None else list(range(len(observations)))
    count = len(observations) if max_episodes is None else min(max_episodes, len(observations))
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    kept_ids: list[int] = []
    tails: list[float] = []
    skipped = 0
    for i in range(count):
        episode = _check_episode(observations[i], actions[i], rewards[i], ids[i])
        if episode is None:
            skipped += 1
        else:
            kept.append(episode)
            kept_ids.append(ids[i])
            bootstrap = bootstrapped is not None and bootstrapped[i]
            tails.append(held_tail_value(episode[2], rtg_discount) if bootstrap else 0.0)
    if skipped:
        logging.warning("skipped %d episode(s) with no steps", skipped)
    if not kept:
        raise DatasetContentError(f"none of the {count} episodes has a step (all are empty); "
                                  "regenerate or re-download it")
    _check_consistent_dims(kept, kept_ids)

    lengths = np.array([len(r) for _, _, r in kept], dtype=np.int32)
    num, max_len = len(kept), int(lengths.max())
    state_dim, action_dim = kept[0][0].shape[1], kept[0][1].shape[1]
    obs_out = np.empty((num, max_len, state_dim), np.float32)
    act_out = np.zeros((num, max_len, action_dim), np.float32)
    rew_out = np.zeros((num, max_len), np.float32)
    rtg_out = np.zeros((num, max_len), np.float32)
    for i, ((obs, act, rew), tail) in enumerate(zip(kept, tails, strict=True)):
        t = len(rew)
        obs_out[i, :t] = obs
        obs_out[i, t:] = obs[-1]
        act_out[i, :t] = act
        rew_out[i, :t] = rew
        rtg_out[i, :t] = returns_to_go(rew, rtg_discount, tail) / rtg_scale

    if action_low is None or action_high is None:
        valid = np.arange(max_len)[None, :] < lengths[:, None]
        data_low, data_high = act_out[valid].min(axis=0), act_out[valid].max(axis=0)
        action_low = data_low if action_low is None else action_low
        action_high = data_high if action_high is None else action_high
    action_low = np.asarray(action_low, np.float32).reshape(-1)
    action_high = np.asarray(action_high, np.float32).reshape(-1)
    if action_low.shape != (action_dim,) or action_high.shape != (action_dim,):
        raise ValueError(f"action bounds have shapes {action_low.shape} / {action_high.shape}, "
                         f"but actions are {action_dim}-D")
    return EpisodeArrays(obs_out, act_out, rew_out, rtg_out, lengths, action_low, action_high,
                         num_skipped_empty=skipped)


def _check_episode(obs, act, rew, episode_id: int):
    """Validated (T, S), (T, A), (T,) float32 arrays, or None for an empty episode."""
    rew = np.asarray(rew, np.float32).reshape(-1)
    act = np.asarray(act, np.float32)
    obs = np.asarray(obs, np.float32)
    steps = len(rew)
    if steps == 0:
        return None
    act = np.atleast_1d(act)
    if len(act) != steps:
        raise DatasetContentError(f"episode {episode_id}: {len(act)} actions but {steps} rewards")
    act = act.reshape(steps, -1)
    if obs.ndim == 1:
        obs = obs[:, None]
    if obs.ndim != 2:
        raise DatasetContentError(f"episode {episode_id}: observations must be flattened to (T, S), got "
                                  f"shape {obs.shape} (use mage_jax.data.observations.flatten_observations)")
    if len(obs) == steps + 1:
        obs = obs[:steps]  # Minari's final observation follows the last action: no action for it
    elif len(obs) != steps:
        raise DatasetContentError(f"episode {episode_id}: {len(obs)} observations for {steps} steps; "
                                  f"expected {steps} or {steps + 1}")
    for field, values in (("observations", obs), ("actions", act), ("rewards", rew)):
        if not np.all(np.isfinite(values)):
            step = int(np.argwhere(~np.isfinite(values))[0][0])
            raise DatasetContentError(f"non-finite value (NaN or inf) in {field} of episode "
                                      f"{episode_id} (first at step {step}); clean or drop that episode")
    return obs, act, rew


def _check_consistent_dims(kept, ids) -> None:
    state_dim, action_dim = kept[0][0].shape[1], kept[0][1].shape[1]
    for (obs, act, _), episode_id in zip(kept, ids, strict=True):
        if obs.shape[1] != state_dim or act.shape[1] != action_dim:
            raise DatasetContentError(f"episode {episode_id} has state/action dims {obs.shape[1]}/"
                                      f"{act.shape[1]}, the first episode {state_dim}/{action_dim}")


def _box_bounds(space) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(space, gym.spaces.Box):
        raise DatasetContentError(f"only continuous (Box) action spaces are supported, got {space}")
    return (np.asarray(space.low, np.float32).reshape(-1),
            np.asarray(space.high, np.float32).reshape(-1))
