"""Write local PointMaze Minari datasets with the D4RL / Minari `D4RL/pointmaze/*-v2` recipe.

Collection: one continuing stream on `PointMaze_{UMaze,Medium,Large}[Dense]-v3` with `continuing_task=True,
reset_target=True` (a new random goal is drawn each time the ball reaches the current one). The expert is
`maze_planner.WaypointController` (cell planner + PD law) plus N(0, noise_std^2) action noise, clipped to
the action bounds. The stream is cut into episodes at every success (Minari's split: the success step ends
its episode with `truncations=True` and, for sparse rewards, the episode's only reward) or, with
`split="fixed"`, into equal-length episodes (D4RL maze2d style).

One deliberate difference from Minari's DataCollector: the first observation of an episode that follows a
success shows the *new* goal (the one the next action pursues), not the reached one, so every
success-split episode has a constant `desired_goal`.

The dataset records an eval env (fixed goal cell, `continuing_task=True, reset_target=False`, D4RL
horizons 300/600/800, so `dataset.recover_environment(eval_env=True)` rebuilds it) and `ref_min_score`
(uniform random actions) / `ref_max_score` (the controller without noise) measured on that env, so
`minari.get_normalized_score` works.

Speed: the MuJoCo model of the env is stepped directly (velocity clip, ctrl, `mj_step` -- the same physics
as `PointMazeEnv.step` without building dict observations each step) and goal resampling goes through the
env's own `update_goal`, so the env's random stream is consumed exactly as in `env.step`.

CLI: python -m mage_jax.datasets.pointmaze --maze=medium --steps=1000000 [--dense] [--overwrite]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import gymnasium as gym
import minari
import mujoco
import numpy as np
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer

from mage_jax.data.minari_source import DATASET_ID_PATTERN, minari_datasets_path
from mage_jax.datasets.maze_planner import WaypointController
from mage_jax.robotics_envs import register_robotics_envs

SUCCESS_DISTANCE = 0.45  # PointMazeEnv's goal radius (reward, success and goal resampling all use it)
VELOCITY_LIMIT = 5.0  # PointEnv clips the ball's velocity to [-5, 5] before each step
COLLECTION_MAX_EPISODE_STEPS = 1_000_000  # the collection env never truncates (Minari used 1e6 too)
SPLITS = ("success", "fixed")


@dataclass(frozen=True)
class MazeSpec:
    """One maze of the benchmark: its gymnasium-robotics env, eval goal cell and eval horizon."""

    env_name: str  # gymnasium-robotics env id without the `Dense` suffix and version
    goal_cell: tuple[int, int]  # (row, col) of the fixed eval goal (D4RL maze2d's target)
    horizon: int  # eval episode length (D4RL maze2d and the v3 env specs)


MAZES: dict[str, MazeSpec] = {
    "umaze": MazeSpec("PointMaze_UMaze", (1, 1), 300),
    "medium": MazeSpec("PointMaze_Medium", (6, 6), 600),
    "large": MazeSpec("PointMaze_Large", (7, 9), 800),
}


def maze_spec(maze: str) -> MazeSpec:
    if maze not in MAZES:
        raise ValueError(f"unknown maze {maze!r}: choose one of {', '.join(MAZES)}")
    return MAZES[maze]


def env_id(maze: str, dense: bool = False) -> str:
    """gymnasium-robotics env id, e.g. `PointMaze_Medium-v3` or `PointMaze_MediumDense-v3`."""
    return f"{maze_spec(maze).env_name}{'Dense' if dense else ''}-v3"


def default_dataset_id(maze: str, dense: bool = False, hold_steps: int = 0) -> str:
    """`-v0`: D4RL's recipe; `-v1`: reached goals are held (what `experiments/pointmaze.py:local` uses)."""
    maze_spec(maze)
    return f"local/pointmaze/{maze}{'-dense' if dense else ''}-v{1 if hold_steps else 0}"


def eval_maze_map(maze: str) -> list[list[int | str]]:
    """The maze layout with only its eval goal cell marked `g`; every other free cell is a start cell."""
    register_robotics_envs()
    spec = maze_spec(maze)
    layout = [list(row) for row in gym.spec(env_id(maze)).kwargs["maze_map"]]
    row, col = spec.goal_cell
    if layout[row][col] == 1:
        raise AssertionError(f"eval goal cell {spec.goal_cell} of {maze} is a wall")
    layout[row][col] = "g"
    return layout


def make_collection_env(maze: str, dense: bool = False, max_episode_steps: int | None = None) -> gym.Env:
    """The data-collection env: continuing task, goal resampled on arrival, never truncated."""
    register_robotics_envs()
    return gym.make(env_id(maze, dense), continuing_task=True, reset_target=True,
                    max_episode_steps=max_episode_steps or COLLECTION_MAX_EPISODE_STEPS)


def eval_env_spec(maze: str, dense: bool = False) -> EnvSpec:
    """Fixed-goal eval env spec: reward keeps accruing while the ball stays at the goal."""
    register_robotics_envs()
    env = gym.make(env_id(maze, dense), maze_map=eval_maze_map(maze), continuing_task=True,
                   reset_target=False, max_episode_steps=maze_spec(maze).horizon)
    spec = env.spec
    env.close()
    return spec


@dataclass
class Stream:
    """One continuing stream of `steps` transitions (index t = the t-th action)."""

    states: np.ndarray  # (steps + 1, 4) ball position and velocity after t actions
    goals: np.ndarray  # (steps + 1, 2) goal in force when acting from state t (after any resample)
    actions: np.ndarray  # (steps, 2) float32, exactly what was applied
    rewards: np.ndarray  # (steps,)
    successes: np.ndarray  # (steps,) bool: action t brought the ball within SUCCESS_DISTANCE
    goal_changes: np.ndarray  # (steps,) bool: a new goal was drawn after action t (episode ends)


def collect_stream(env: gym.Env, steps: int, seed: int = 0, noise_std: float = 0.5,
                   progress: bool = False, hold_steps: int = 0) -> Stream:
    """Drive `env` (a `make_collection_env` env) for `steps` steps with the noisy waypoint controller.

    With `hold_steps` > 0 the controller keeps steering to a reached goal for that many more steps
    before the next goal is drawn (D4RL draws it at once, so its data never shows a ball staying at
    the goal, which is what the eval env rewards)."""
    unwrapped = env.unwrapped
    obs, _ = env.reset(seed=seed)
    controller = WaypointController(unwrapped.maze, rng=np.random.default_rng([seed, 1]))
    noise_rng = np.random.default_rng([seed, 2])
    model, data = unwrapped.point_env.model, unwrapped.point_env.data
    dense = unwrapped.reward_type == "dense"

    states = np.empty((steps + 1, 4))
    goals = np.empty((steps + 1, 2))
    actions = np.empty((steps, 2), dtype=np.float32)
    rewards = np.zeros(steps)
    successes = np.zeros(steps, dtype=bool)
    goal_changes = np.zeros(steps, dtype=bool)
    holding, hold_left = False, 0
    states[0] = obs["observation"]
    x, y, vx, vy = states[0].tolist()
    gx, gy = unwrapped.goal.tolist()
    f32 = np.float32

    bar = _progress_bar(steps, progress, "collecting")
    chunk = 10_000
    for start in range(0, steps, chunk):
        # Noise drawn per chunk as Python floats: cheap to index, small in memory.
        noise = (noise_rng.standard_normal((min(chunk, steps - start), 2)) * noise_std).tolist()
        for t, (nx, ny) in enumerate(noise, start):
            goals[t] = (gx, gy)
            ax, ay = controller.act(x, y, vx, vy, gx, gy)
            ax = float(f32(min(1.0, max(-1.0, ax + nx))))  # stored as float32: apply that exact value
            ay = float(f32(min(1.0, max(-1.0, ay + ny))))
            actions[t] = (ax, ay)
            # PointMazeEnv.step physics: clip velocity, set ctrl, one mj_step (frame_skip 1).
            np.clip(data.qvel, -VELOCITY_LIMIT, VELOCITY_LIMIT, out=data.qvel)
            data.ctrl[0] = ax
            data.ctrl[1] = ay
            mujoco.mj_step(model, data)
            x, y = data.qpos.tolist()
            vx, vy = data.qvel.tolist()
            states[t + 1] = (x, y, vx, vy)
            distance = math.sqrt((x - gx) ** 2 + (y - gy) ** 2)
            if dense:
                rewards[t] = math.exp(-distance)
            reached = distance <= SUCCESS_DISTANCE
            if reached:
                successes[t] = True
                if not dense:
                    rewards[t] = 1.0
            if holding:
                hold_left -= 1
            elif reached:
                holding, hold_left = True, hold_steps
            if holding and hold_left == 0:
                holding = False
                goal_changes[t] = True
                unwrapped.update_goal(np.array([x, y]))  # the env's own resampling and random stream
                gx, gy = unwrapped.goal.tolist()
        if bar is not None:
            bar.update(len(noise))
    if bar is not None:
        bar.close()
    goals[steps] = (gx, gy)
    return Stream(states, goals, actions, rewards, successes, goal_changes)


def episode_bounds(stream: Stream, split: str, episode_length: int | None = None) -> list[tuple[int, int]]:
    """(first action, last action) of every episode, both inclusive, covering the whole stream."""
    steps = len(stream.actions)
    if split == "success":
        ends = np.flatnonzero(stream.goal_changes).tolist()
        if not ends or ends[-1] != steps - 1:
            ends.append(steps - 1)  # the unfinished tail is kept as a truncated episode (like Minari)
    elif split == "fixed":
        if not episode_length or episode_length < 1:
            raise ValueError(f"split='fixed' needs episode_length >= 1, got {episode_length!r}")
        ends = list(range(episode_length - 1, steps, episode_length))
        if not ends or ends[-1] != steps - 1:
            ends.append(steps - 1)
    else:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    starts = [0] + [end + 1 for end in ends[:-1]]
    return list(zip(starts, ends, strict=True))


def episode_buffers(stream: Stream, bounds: list[tuple[int, int]]) -> list[EpisodeBuffer]:
    """Minari episode buffers with dict observations (observation, achieved_goal, desired_goal)."""
    # The env shows at state t+1 the goal in force when action t was taken (it resamples afterwards).
    shown_goals = np.concatenate([stream.goals[:1], stream.goals[:-1]])
    buffers = []
    for index, (first, last) in enumerate(bounds):
        states = stream.states[first:last + 2]
        desired = shown_goals[first:last + 2].copy()
        desired[0] = stream.goals[first]  # a new episode starts out pursuing the current goal
        length = last - first + 1
        truncations = np.zeros(length, dtype=bool)
        truncations[-1] = True
        buffers.append(EpisodeBuffer(
            id=index,
            observations={"observation": states.copy(), "achieved_goal": states[:, :2].copy(),
                          "desired_goal": desired},
            actions=stream.actions[first:last + 1],
            rewards=stream.rewards[first:last + 1],
            terminations=np.zeros(length, dtype=bool),
            truncations=truncations,
            infos={}))
    return buffers


@dataclass
class PolicyEvaluation:
    """Episodes of one policy on an eval env."""

    mean_return: float
    success_rate: float  # share of episodes that reached the goal at least once
    returns: list[float]


def evaluate_policy(spec: EnvSpec, make_policy: Callable[[gym.Env, int], Callable[[dict], np.ndarray]],
                    episodes: int, seed: int = 0) -> PolicyEvaluation:
    """Run `episodes` episodes of `make_policy(env, episode_seed)` on `gym.make(spec)`."""
    env = gym.make(spec)
    returns, successes = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        policy = make_policy(env, seed + episode)
        total, reached, done = 0.0, False, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            reached = reached or bool(info["success"])
            done = terminated or truncated
        returns.append(total)
        successes.append(reached)
    env.close()
    return PolicyEvaluation(float(np.mean(returns)), float(np.mean(successes)), returns)


def random_policy(env: gym.Env, seed: int) -> Callable[[dict], np.ndarray]:
    """Uniform random actions (Minari's `ref_min_score` policy)."""
    env.action_space.seed(seed)
    return lambda obs: env.action_space.sample()


def controller_policy(noise_std: float = 0.0) -> Callable[[gym.Env, int], Callable[[dict], np.ndarray]]:
    """The waypoint controller, optionally with the collection's action noise."""

    def make(env: gym.Env, seed: int) -> Callable[[dict], np.ndarray]:
        controller = WaypointController(env.unwrapped.maze, rng=np.random.default_rng([seed, 1]))
        noise_rng = np.random.default_rng([seed, 2])

        def policy(obs: dict) -> np.ndarray:
            action = controller(obs)
            if noise_std:
                action = np.clip(action + noise_rng.normal(0.0, noise_std, 2), -1.0, 1.0)
            return action.astype(np.float32)

        return policy

    return make


@dataclass
class ReferenceScores:
    ref_min_score: float  # mean return of uniform random actions
    ref_max_score: float  # mean return of the noiseless controller
    random_success_rate: float
    controller_success_rate: float
    episodes: int


def reference_scores(spec: EnvSpec, episodes: int = 100, seed: int = 0) -> ReferenceScores:
    """Minari reference scores on the eval env, averaged over `episodes` episodes."""
    if episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1 to measure reference scores, got {episodes}")
    random_eval = evaluate_policy(spec, random_policy, episodes, seed)
    expert_eval = evaluate_policy(spec, controller_policy(0.0), episodes, seed)
    return ReferenceScores(random_eval.mean_return, expert_eval.mean_return, random_eval.success_rate,
                           expert_eval.success_rate, episodes)


@dataclass
class GenerationSummary:
    dataset_id: str
    path: str
    episodes: int
    steps: int
    successes: int
    ref_min_score: float
    ref_max_score: float
    controller_success_rate: float
    size_mb: float
    collect_steps_per_s: float
    total_seconds: float


def dataset_path(dataset_id: str) -> str:
    return os.path.join(minari_datasets_path(), dataset_id)


def create_pointmaze_dataset(dataset_id: str | None = None, maze: str = "medium", steps: int = 1_000_000,
                             dense: bool = False, seed: int = 0, split: str = "success",
                             episode_length: int | None = None, eval_episodes: int = 100,
                             noise_std: float = 0.5, progress: bool = True, overwrite: bool = False,
                             hold_steps: int = 0) -> GenerationSummary:
    """Generate, write and describe one dataset; see `generate_pointmaze_dataset`."""
    started = time.perf_counter()
    spec = maze_spec(maze)
    dataset_id = dataset_id or default_dataset_id(maze, dense, hold_steps)
    _check_arguments(dataset_id, steps, split, episode_length, eval_episodes)
    path = dataset_path(dataset_id)
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {path}; pass "
                                  "overwrite=True (CLI: --overwrite) to replace it, or choose another id")
        shutil.rmtree(path)
    if split == "fixed":
        episode_length = episode_length or spec.horizon

    env = make_collection_env(maze, dense, max(steps, COLLECTION_MAX_EPISODE_STEPS))
    collect_start = time.perf_counter()
    stream = collect_stream(env, steps, seed=seed, noise_std=noise_std, progress=progress,
                            hold_steps=hold_steps)
    collect_rate = steps / max(time.perf_counter() - collect_start, 1e-9)
    buffers = episode_buffers(stream, episode_bounds(stream, split, episode_length))

    evaluation_spec = eval_env_spec(maze, dense)
    scores = reference_scores(evaluation_spec, eval_episodes, seed=10_000 + seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*author_email.*")
        dataset = minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env.spec,
            eval_env=evaluation_spec,
            algorithm_name=f"D4RL maze2d waypoint controller (PD 10/-1, waypoint jitter 0.2) + "
                           f"N(0, {noise_std}^2) action noise",
            author="mage_jax",
            code_permalink="mage_jax/datasets/pointmaze.py",
            ref_min_score=scores.ref_min_score,
            ref_max_score=scores.ref_max_score,
            num_episodes_average_score=eval_episodes,
            description=_description(maze, dense, steps, seed, split, episode_length, noise_std,
                                     hold_steps),
            requirements=["gymnasium-robotics>=1.2.4", "mujoco>=2.3"],
        )
    dataset.storage.update_metadata({"pointmaze_generation": {
        "maze": maze, "dense": dense, "seed": seed, "split": split, "episode_length": episode_length,
        "noise_std": noise_std, "hold_steps": hold_steps, "eval_goal_cell": list(spec.goal_cell),
        "eval_horizon": spec.horizon,
        "reference": asdict(scores)}})
    env.close()
    return GenerationSummary(
        dataset_id=dataset_id, path=path, episodes=len(buffers), steps=steps,
        successes=int(stream.goal_changes.sum()), ref_min_score=scores.ref_min_score,
        ref_max_score=scores.ref_max_score, controller_success_rate=scores.controller_success_rate,
        size_mb=_size_mb(path), collect_steps_per_s=collect_rate,
        total_seconds=time.perf_counter() - started)


def generate_pointmaze_dataset(dataset_id: str | None = None, maze: str = "medium", steps: int = 1_000_000,
                               dense: bool = False, seed: int = 0, split: str = "success",
                               episode_length: int | None = None, eval_episodes: int = 100,
                               progress: bool = True, overwrite: bool = False, hold_steps: int = 0) -> str:
    """Write local Minari dataset `dataset_id` (default: `default_dataset_id`); return the id.

    `steps` transitions of the noisy waypoint controller in one continuing stream, split at every goal
    change (`split="success"`: at each success, or `hold_steps` steps after it) or into
    `episode_length`-step episodes (`split="fixed"`, default the eval horizon; the last episode keeps
    the remainder). `eval_episodes` episodes per policy measure the reference scores. An existing
    dataset is only replaced with `overwrite=True`.
    """
    return create_pointmaze_dataset(dataset_id=dataset_id, maze=maze, steps=steps, dense=dense, seed=seed,
                                    split=split, episode_length=episode_length,
                                    eval_episodes=eval_episodes, progress=progress,
                                    overwrite=overwrite, hold_steps=hold_steps).dataset_id


def _check_arguments(dataset_id: str, steps: int, split: str, episode_length: int | None,
                     eval_episodes: int) -> None:
    if not isinstance(dataset_id, str) or not DATASET_ID_PATTERN.match(dataset_id):
        raise ValueError(f"malformed dataset id {dataset_id!r}: Minari ids have the form "
                         "'namespace/name-vN', e.g. 'local/pointmaze/umaze-v0'")
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if episode_length is not None and (not isinstance(episode_length, int | np.integer)
                                       or episode_length < 1):
        raise ValueError(f"episode_length must be a positive integer or None, got {episode_length!r}")
    if not isinstance(eval_episodes, int | np.integer) or eval_episodes < 1:
        raise ValueError(f"eval_episodes must be a positive integer, got {eval_episodes!r}")


def _description(maze: str, dense: bool, steps: int, seed: int, split: str, episode_length: int | None,
                 noise_std: float, hold_steps: int = 0) -> str:
    spec = maze_spec(maze)
    split_text = ("split into episodes at each goal reached (the success step is truncated)"
                  if split == "success" else f"split into fixed {episode_length}-step episodes")
    if hold_steps:
        split_text += (f"; unlike D4RL, the controller holds each reached goal for {hold_steps} more "
                       "steps before the next goal is drawn (and the episode ends)")
    return (f"Local reproduction of Minari's D4RL/pointmaze/{maze}{'-dense' if dense else ''}-v2 recipe: "
            f"{steps} steps on {env_id(maze, dense)} (continuing_task=True, reset_target=True, seed {seed}) "
            "driven by a cell planner (BFS shortest path) + PD waypoint controller with "
            f"N(0, {noise_std}^2) action noise, {split_text}. Eval env: goal cell {spec.goal_cell}, "
            f"reset_target=False, {spec.horizon} steps; ref_min_score = uniform random actions, "
            "ref_max_score = the controller without noise. Written by mage_jax.datasets.pointmaze.")


def _size_mb(path: str) -> float:
    total = sum(os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(path) for name in names)
    return total / 1e6


def _progress_bar(total: int, enabled: bool, description: str):
    if not enabled:
        return None
    from mage_jax.progress import progress_bar

    return progress_bar(total, description, "step", unit_scale=True, mininterval=1.0)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mage_jax.datasets.pointmaze",
        description="Generate a local PointMaze Minari dataset with the D4RL maze2d recipe.")
    parser.add_argument("--maze", choices=sorted(MAZES), default="medium")
    parser.add_argument("--steps", type=int, default=1_000_000, help="environment steps to record")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense", action="store_true", help="use the Dense reward env variant")
    parser.add_argument("--split", choices=SPLITS, default="success")
    parser.add_argument("--episode-length", type=int, default=None,
                        help="episode length for --split=fixed (default: the eval horizon)")
    parser.add_argument("--eval-episodes", type=int, default=100,
                        help="episodes per policy for the reference scores")
    parser.add_argument("--hold-steps", type=int, default=20,
                        help="steps the controller holds each reached goal before the next is drawn "
                             "(default: as experiments/pointmaze.py:local; 0 = D4RL's recipe, a new goal "
                             "at once)")
    parser.add_argument("--dataset-id", default=None,
                        help="Minari id (default local/pointmaze/<maze>[-dense]-v1, -v0 with --hold-steps=0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = create_pointmaze_dataset(
            dataset_id=args.dataset_id, maze=args.maze, steps=args.steps, dense=args.dense, seed=args.seed,
            split=args.split, episode_length=args.episode_length, eval_episodes=args.eval_episodes,
            progress=not args.no_progress, overwrite=args.overwrite, hold_steps=args.hold_steps)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"dataset id:        {summary.dataset_id}\n"
          f"episodes:          {summary.episodes}\n"
          f"steps:             {summary.steps} ({summary.successes} goals reached)\n"
          f"ref_min_score:     {summary.ref_min_score:.2f} (uniform random actions)\n"
          f"ref_max_score:     {summary.ref_max_score:.2f} (controller, success rate "
          f"{100 * summary.controller_success_rate:.0f}%)\n"
          f"path:              {summary.path}\n"
          f"size on disk:      {summary.size_mb:.1f} MB\n"
          f"collection speed:  {summary.collect_steps_per_s:,.0f} steps/s "
          f"(total {summary.total_seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
