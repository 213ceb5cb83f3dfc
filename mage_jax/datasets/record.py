"""Record a local Minari dataset through a real env with a simple policy, in a public dataset's layout.

    python -m mage_jax.datasets.record --env=AntMaze_UMaze-v4 --policy=random --episodes=20
        [--dataset-id local/antmaze/umaze-random-v0] [--seed 0] [--ref-episodes 100] [--overwrite]

The collection and eval envs follow `env_layouts.env_layout` (AntMaze as `D4RL/antmaze/*-v1`, Adroit
as `D4RL/<task>/*-v2`, locomotion as `mujoco/<env>/*-v0`). Episode i starts from `reset(seed=seed + i)`
and runs until the env terminates or truncates: rewards, terminations and truncations are exactly what
the env returned. Infos follow Minari's layout (row 0 from `reset`, row t + 1 from step t) for every
numeric key the env reports; a key the env only reports after a step (e.g. Adroit's `success`) has a
row 0 of False / NaN, and the dataset metadata lists those keys. AntMaze also stores D4RL's `qpos`,
`qvel` and `goal` infos. (Minari's `DataCollector(record_infos=True)` refuses such envs, so the
episodes are assembled here.)

Reference scores: `ref_min_score` is the mean return of uniform random actions over `ref_episodes`
episodes of the eval env (Minari's recipe). No expert exists here, so no `ref_max_score` is stored
and the metadata says so; scores on these datasets are raw returns (AntMaze: 100 x success).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer

from mage_jax.data.minari_source import DATASET_ID_PATTERN, minari_datasets_path
from mage_jax.datasets.env_layouts import EnvLayout, env_layout

POLICIES = ("random",)
REF_SEED_OFFSET = 10_000  # reference episodes use seeds apart from the recorded ones
NO_REF_MAX = ("no expert policy exists for this locally recorded dataset, so no ref_max_score is "
              "known and no normalised score can be given: report raw returns (AntMaze: 100 x success)")


def make_policy(name: str, env: gym.Env, seed: int) -> Callable[[object], np.ndarray]:
    """The recording policy `name` for `env` (`random`: uniform over the action space, seeded)."""
    if name != "random":
        raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICIES)}")
    env.action_space.seed(seed)
    return lambda obs: env.action_space.sample()


@dataclasses.dataclass
class Episode:
    """One recorded episode as numpy arrays (T steps, T + 1 observations and info rows)."""

    seed: int
    observations: dict | np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict
    step_only_info_keys: list[str]

    def buffer(self, index: int) -> EpisodeBuffer:
        return EpisodeBuffer(id=index, seed=self.seed, observations=self.observations,
                             actions=self.actions, rewards=self.rewards, terminations=self.terminations,
                             truncations=self.truncations, infos=self.infos)


def record_episode(env: gym.Env, policy: Callable, seed: int, family: str) -> Episode:
    """Run `policy` in `env` from `reset(seed=seed)` until the env ends the episode."""
    obs, info = env.reset(seed=seed)
    observations, infos = [_copy(obs)], [_with_d4rl_infos(info, obs, family)]
    actions, rewards, terminations, truncations = [], [], [], []
    while True:
        action = np.asarray(policy(obs), dtype=env.action_space.dtype)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(_copy(obs))
        infos.append(_with_d4rl_infos(info, obs, family))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        if terminated or truncated:
            break
    stacked, step_only = _stack_infos(infos)
    return Episode(seed, _stack_observations(observations), np.stack(actions), np.asarray(rewards),
                   np.asarray(terminations), np.asarray(truncations), stacked, step_only)


def _with_d4rl_infos(info: dict, obs, family: str) -> dict:
    """AntMaze: add D4RL's simulator-state infos (qpos = xy ++ observation[:13], qvel, goal)."""
    if family != "antmaze":
        return info
    return {**info, "qpos": np.concatenate([obs["achieved_goal"], obs["observation"][:13]]),
            "qvel": np.array(obs["observation"][13:]), "goal": np.array(obs["desired_goal"])}


def _copy(obs):
    """A private copy: an env may hand out views of buffers it later overwrites."""
    if isinstance(obs, dict):
        return {key: np.array(value, copy=True) for key, value in obs.items()}
    return np.array(obs, copy=True)


def _stack_observations(observations: list):
    if isinstance(observations[0], dict):
        return {key: np.stack([np.asarray(o[key]) for o in observations]) for key in observations[0]}
    return np.stack([np.asarray(o) for o in observations])


def _stack_infos(infos: list[dict]) -> tuple[dict, list[str]]:
    """Per-key (T + 1, ...) arrays of the numeric infos; keys missing at reset get a False / NaN row 0."""
    steps = infos[1:]
    keys = [k for k in steps[0] if all(k in i for i in steps) and _is_numeric(steps[0][k])]
    stacked, step_only = {}, []
    for key in keys:
        rows = [np.asarray(i[key]) for i in steps]
        first = infos[0].get(key)
        if first is None or np.shape(first) != rows[0].shape:
            step_only.append(key)
            first = np.zeros(rows[0].shape, bool) if rows[0].dtype == bool else np.full(rows[0].shape, np.nan)
        stacked[key] = np.stack([np.asarray(first), *rows])
    return stacked, step_only


def _is_numeric(value) -> bool:
    return np.asarray(value).dtype.kind in "biuf"


def random_reference_score(spec, episodes: int, seed: int) -> float:
    """Mean return of uniform random actions over `episodes` episodes of `gym.make(spec)`."""
    env = gym.make(spec, disable_env_checker=True)
    try:
        returns = []
        for episode in range(episodes):
            policy = make_policy("random", env, seed + episode)
            returns.append(float(record_episode(env, policy, seed + episode, "").rewards.sum()))
    finally:
        env.close()
    return float(np.mean(returns))


@dataclasses.dataclass(frozen=True)
class RecordingSummary:
    dataset_id: str
    path: str
    env_id: str
    episodes: int
    steps: int
    terminations: int  # episodes the env terminated (the rest were truncated)
    mean_return: float
    ref_min_score: float
    steps_per_second: float  # recording speed (env and policy)

    def lines(self) -> list[str]:
        return [f"dataset id:     {self.dataset_id}", f"env:            {self.env_id}",
                f"episodes:       {self.episodes} ({self.terminations} terminated by the env)",
                f"steps:          {self.steps}", f"mean return:    {self.mean_return:.3f}",
                f"ref_min_score:  {self.ref_min_score:.3f} (uniform random actions on the eval env)",
                "ref_max_score:  none (no expert known for local data)",
                f"speed:          {self.steps_per_second:.0f} steps/s", f"path:           {self.path}"]


def default_dataset_id(env_id: str, policy: str = "random") -> str:
    """The id the `local` configs load: `local/antmaze/umaze-random-v0`, `local/pen/random-v0`,
    `local/hopper/random-v0`."""
    name = env_id.split("-")[0]
    if name.startswith("AntMaze_"):
        return f"local/antmaze/{name.removeprefix('AntMaze_').lower()}-{policy}-v0"
    return f"local/{name.removeprefix('AdroitHand').lower()}/{policy}-v0"


def write_recorded_dataset(dataset_id: str | None, env_id: str, policy: str = "random", episodes: int = 100,
                           seed: int = 0, ref_episodes: int = 100,
                           overwrite: bool = False) -> RecordingSummary:
    """Record `episodes` episodes of `policy` in `env_id`'s public layout as Minari dataset `dataset_id`.

    Raises ValueError for bad arguments and FileExistsError when the id exists and not `overwrite`.
    """
    dataset_id = dataset_id or default_dataset_id(env_id, policy)
    _check_arguments(dataset_id, policy, episodes, ref_episodes)
    layout = env_layout(env_id)
    path = os.path.join(minari_datasets_path(), dataset_id)
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {path}; pass "
                                  "overwrite=True (CLI: --overwrite) to replace it, or choose another id")
        shutil.rmtree(path)

    env = gym.make(layout.collection, disable_env_checker=True)
    start = time.perf_counter()
    try:
        recorded = [record_episode(env, make_policy(policy, env, seed + i), seed + i, layout.family)
                    for i in range(episodes)]
    finally:
        env.close()
    steps = sum(len(e.rewards) for e in recorded)
    speed = steps / max(time.perf_counter() - start, 1e-9)
    ref_min = random_reference_score(layout.evaluation, ref_episodes, REF_SEED_OFFSET + seed)
    dataset = _create(dataset_id, layout, recorded, policy, seed, env, ref_episodes)
    dataset.storage.update_metadata({
        "ref_min_score": ref_min, "ref_max_score_note": NO_REF_MAX,
        "recording": {"env_id": env_id, "policy": policy, "seed": seed, "episodes": episodes,
                      "max_episode_steps": layout.collection.max_episode_steps,
                      "ref_episodes": ref_episodes, "public_layout": layout.public_datasets,
                      "info_keys_missing_at_reset": sorted({k for e in recorded
                                                            for k in e.step_only_info_keys}),
                      "generator": "mage_jax.datasets.record"}})
    return RecordingSummary(dataset_id, path, env_id, episodes, steps,
                            int(sum(e.terminations[-1] for e in recorded)),
                            float(np.mean([e.rewards.sum() for e in recorded])), ref_min, speed)


def generate_recorded_dataset(dataset_id: str | None = None, env_id: str = "AntMaze_UMaze-v4",
                              policy: str = "random", episodes: int = 100, seed: int = 0,
                              ref_episodes: int = 100, overwrite: bool = False) -> str:
    """`write_recorded_dataset`, returning the dataset id (the `data.generator="record"` entry point)."""
    return write_recorded_dataset(dataset_id, env_id, policy, episodes, seed, ref_episodes,
                                  overwrite).dataset_id


def _create(dataset_id: str, layout: EnvLayout, recorded: list[Episode], policy: str, seed: int,
            env: gym.Env, ref_episodes: int) -> minari.MinariDataset:
    with warnings.catch_warnings():  # minari nags about the author e-mail we leave empty
        warnings.simplefilter("ignore", UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=[e.buffer(i) for i, e in enumerate(recorded)],
            env=layout.collection, eval_env=layout.evaluation,
            algorithm_name=f"{policy} policy (mage_jax.datasets.record)", author="mage_jax",
            code_permalink="mage_jax/datasets/record.py",
            observation_space=env.observation_space, action_space=env.action_space,
            description=(f"{len(recorded)} episodes of a {policy} policy in {layout.collection.id} "
                         f"(seeds {seed}..{seed + len(recorded) - 1}), recorded locally in the layout of "
                         f"{layout.public_datasets}. ref_min_score: random actions over {ref_episodes} "
                         "eval episodes; no ref_max_score (no expert)."),
            requirements=["gymnasium-robotics>=1.2.4", "mujoco>=2.3"])


def _check_arguments(dataset_id, policy, episodes, ref_episodes) -> None:
    if not isinstance(dataset_id, str) or not DATASET_ID_PATTERN.match(dataset_id):
        raise ValueError(f"malformed dataset id {dataset_id!r}: Minari ids have the form "
                         "'namespace/name-vN', e.g. 'local/antmaze/umaze-random-v0'")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    for name, value in (("episodes", episodes), ("ref_episodes", ref_episodes)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mage_jax.datasets.record", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help="gymnasium env id, e.g. AntMaze_UMaze-v4, "
                        "AdroitHandPen-v1, Hopper-v5")
    parser.add_argument("--policy", choices=POLICIES, default="random")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-episodes", type=int, default=100,
                        help="random-policy eval episodes for ref_min_score")
    parser.add_argument("--dataset-id", default=None,
                        help="Minari id (default: the `local` config's, e.g. local/pen/random-v0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = write_recorded_dataset(args.dataset_id, args.env, args.policy, args.episodes, args.seed,
                                         args.ref_episodes, args.overwrite)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
