"""Optional source: RLDS episodes (TFDS builders such as `d4rl_*`) into the same EpisodeArrays.

RLDS stores an episode as a sequence of steps, each with `observation`, `action`, `reward`,
`is_first`, `is_last` (and usually `is_terminal`, `discount`). Step t holds (o_t, a_t, r_t). Some
producers end an episode with an extra step that carries only the final observation; pass
`final_step_is_observation_only=True` for those so its meaningless action / reward are dropped.

Needs the `tfds` extra: pip install -e ".[tfds]" (tensorflow_datasets is imported lazily).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np

from mage_jax.data.episodes import EpisodeArrays, episodes_from_lists
from mage_jax.data.observations import flatten_observations

REQUIRED_STEP_KEYS = ("observation", "action", "reward")
_MAX_EPISODE_STEPS = 10_000_000  # batch size that gathers a whole episode's steps at once


def episodes_from_rlds(builder_dir_or_name: str, split: str, obs_family: str, *,
                       data_dir: str | None = None, rtg_discount: float = 1.0,
                       rtg_scale: float = 1.0, max_episodes: int | None = None,
                       final_step_is_observation_only: bool = False,
                       action_low: np.ndarray | None = None,
                       action_high: np.ndarray | None = None) -> EpisodeArrays:
    """Read an RLDS split into EpisodeArrays.

    `builder_dir_or_name` is either a prepared TFDS dataset directory (the folder with
    dataset_info.json) or a registered builder name such as 'd4rl_mujoco_halfcheetah/v2-medium'
    (looked up under `data_dir`; it must already be prepared). Action bounds default to the data's
    min / max because RLDS specs carry none.
    """
    tfds = _import_tfds()
    if os.path.isdir(builder_dir_or_name):
        builder = tfds.builder_from_directory(builder_dir_or_name)
    else:
        builder = tfds.builder(builder_dir_or_name, data_dir=data_dir)
    dataset = builder.as_dataset(split=split)
    if max_episodes is not None:
        dataset = dataset.take(max_episodes)

    def numpy_steps():
        for episode in dataset:
            steps = episode["steps"].batch(_MAX_EPISODE_STEPS).get_single_element()
            yield tfds.as_numpy(steps)

    return episodes_from_rlds_steps(
        numpy_steps(), obs_family, rtg_discount=rtg_discount, rtg_scale=rtg_scale,
        final_step_is_observation_only=final_step_is_observation_only,
        action_low=action_low, action_high=action_high)


def episodes_from_rlds_steps(episodes: Iterable[Mapping], obs_family: str, *,
                             rtg_discount: float = 1.0, rtg_scale: float = 1.0,
                             final_step_is_observation_only: bool = False,
                             action_low: np.ndarray | None = None,
                             action_high: np.ndarray | None = None) -> EpisodeArrays:
    """EpisodeArrays from episodes given as dicts of stacked step fields (numpy, leading axis T).

    This is the TensorFlow-free half of `episodes_from_rlds`.
    """
    observations, actions, rewards = [], [], []
    for index, steps in enumerate(episodes):
        missing = [k for k in REQUIRED_STEP_KEYS if k not in steps]
        if missing:
            raise ValueError(f"RLDS episode {index} lacks step fields {missing} "
                             f"(has {sorted(steps)})")
        obs = flatten_observations(steps["observation"], obs_family)
        act = np.asarray(steps["action"], np.float32)
        rew = np.asarray(steps["reward"], np.float32).reshape(-1)
        if "is_first" in steps and len(rew) and not bool(np.asarray(steps["is_first"])[0]):
            raise ValueError(f"RLDS episode {index} does not start with is_first=True; "
                             "episodes must hold complete step sequences")
        if final_step_is_observation_only and len(rew):
            act, rew = act[:-1], rew[:-1]  # obs keeps T + 1 rows; episodes_from_lists drops one
        observations.append(obs)
        actions.append(act)
        rewards.append(rew)
    if not observations:
        raise ValueError("the RLDS split holds no episodes")
    return episodes_from_lists(observations, actions, rewards, action_low=action_low,
                               action_high=action_high, rtg_discount=rtg_discount,
                               rtg_scale=rtg_scale)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "reading RLDS / TFDS episodes needs tensorflow_datasets and tensorflow, which are not "
            f"installed ({error}); install the extra: pip install -e \".[tfds]\"") from error
    return tfds
