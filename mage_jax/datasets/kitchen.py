"""Scripted FrankaKitchen-v1 demonstrations written as a local Minari dataset.

    python -m mage_jax.datasets.kitchen --episodes=300
        [--tasks microwave,kettle,"light switch","slide cabinet"] [--seed 0] [--noise 0.05]
        [--mixed-fraction 0.3] [--dataset-id local/kitchen/scripted-v0] [--workers 1] [--overwrite]
    python -m mage_jax.datasets.kitchen --evaluate-only --num-seeds 50

The demonstrator is `kitchen_expert.KitchenExpert`. The env's reset is deterministic, so episodes are
varied by perturbing the initial arm joints (uniform, up to `init_perturbation` rad), by Gaussian
action noise, and, for `mixed_fraction` of the episodes, by doing only a random proper subset of the
tasks in a random order (those episodes end once the expert has released the last object), so the data
is not all expert. The other episodes do every task in the given order.

Episodes are recorded with the D4RL-convention env (`FrankaKitchen-v1`, the given tasks,
`remove_task_when_completed=True, terminate_on_tasks_completed=True`, 280 steps), which is also the
dataset's eval env: the reward is 1 on the step a task is completed, so a return counts tasks. The
observations have the `D4RL/kitchen/*-v2` layout: a dict with the 59-D `observation` and per-task
`achieved_goal` / `desired_goal`. Infos are not recorded (Minari's info recording crashes on Kitchen).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from mage_jax.data.minari_source import DatasetUnavailableError
from mage_jax.datasets.kitchen_expert import ARM_JOINTS, KNOWN_TASKS, KitchenExpert
from mage_jax.robotics_envs import register_robotics_envs

ENV_ID = "FrankaKitchen-v1"
DEFAULT_DATASET_ID = "local/kitchen/scripted-v0"
DEFAULT_TASKS = ("microwave", "kettle", "light switch", "slide cabinet")
MAX_EPISODE_STEPS = 280  # the D4RL kitchen horizon
DEFAULT_NOISE = 0.05
DEFAULT_INIT_PERTURBATION = 0.15


# ---------------------------------------------------------------------------------------- env
def env_kwargs(tasks: Sequence[str]) -> dict:
    """The D4RL-convention env: a completed task pays once and leaves the list; all done ends it."""
    return {"tasks_to_complete": list(tasks), "remove_task_when_completed": True,
            "terminate_on_tasks_completed": True}


def eval_env_spec(tasks: Sequence[str] = DEFAULT_TASKS) -> gym.envs.registration.EnvSpec:
    """The env spec stored as the dataset's eval env."""
    register_robotics_envs()
    return dataclasses.replace(gym.spec(ENV_ID), kwargs=env_kwargs(tasks),
                               max_episode_steps=MAX_EPISODE_STEPS)


def make_env(tasks: Sequence[str] = DEFAULT_TASKS) -> gym.Env:
    """A D4RL-convention FrankaKitchen-v1 env (280-step limit) for the given tasks."""
    register_robotics_envs()
    return gym.make(eval_env_spec(tasks), disable_env_checker=True)


def reset_perturbed(env: gym.Env, rng: np.random.Generator, init_perturbation: float, seed: int):
    """env.reset(seed) from the fixed initial posture with the arm joints moved by U(-p, p) rad.

    The env always restores `robot_env.init_qpos`, so the perturbation is applied there for this one
    reset; the perturbed joints stay inside the model's range (or the reset value where that already
    lies outside, as joint 2 does).
    """
    robot = env.unwrapped.robot_env
    original = np.array(robot.init_qpos, dtype=np.float64, copy=True)
    perturbed = original.copy()
    if init_perturbation > 0:
        lower = np.minimum(robot.model.jnt_range[:ARM_JOINTS, 0], original[:ARM_JOINTS])
        upper = np.maximum(robot.model.jnt_range[:ARM_JOINTS, 1], original[:ARM_JOINTS])
        offset = rng.uniform(-init_perturbation, init_perturbation, ARM_JOINTS)
        perturbed[:ARM_JOINTS] = np.clip(original[:ARM_JOINTS] + offset, lower, upper)
    robot.init_qpos = perturbed
    try:
        return env.reset(seed=seed)
    finally:
        robot.init_qpos = original


# ---------------------------------------------------------------------------------------- episodes
@dataclasses.dataclass(frozen=True)
class EpisodePlan:
    """What one episode does; everything random about it derives from `seed`."""

    index: int
    seed: int
    order: tuple[str, ...]
    mixed: bool


@dataclasses.dataclass(frozen=True)
class Settings:
    tasks: tuple[str, ...]
    noise: float
    init_perturbation: float


def plan_episodes(episodes: int, mixed_fraction: float, tasks: Sequence[str], seed: int) -> list[EpisodePlan]:
    """Which episodes are mixed (a random proper subset of the tasks, random order) and their seeds."""
    rng = np.random.default_rng(seed)
    mixed = set(rng.choice(episodes, size=int(round(episodes * mixed_fraction)), replace=False).tolist())
    plans = []
    for index in range(episodes):
        episode_seed = int(rng.integers(2**31 - 1))
        order = tuple(tasks)
        if index in mixed:
            count = int(rng.integers(1, max(len(tasks), 2)))
            order = tuple(tasks[i] for i in rng.permutation(len(tasks))[:count])
        plans.append(EpisodePlan(index, episode_seed, order, index in mixed))
    return plans


def run_episode(env: gym.Env, plan: EpisodePlan, settings: Settings, record: bool = True) -> dict:
    """Roll the expert through one planned episode; returns its arrays (if `record`) and outcome."""
    rng = np.random.default_rng(plan.seed)
    expert = KitchenExpert(env, noise=settings.noise, rng=rng)
    obs, info = reset_perturbed(env, rng, settings.init_perturbation, seed=plan.seed)
    expert.reset(plan.order)
    observations, actions, rewards, terminations, truncations = [_copy_obs(obs)], [], [], [], []
    completed: list[str] = []
    while True:
        action = expert.act(completed)
        obs, reward, terminated, truncated, info = env.step(action)
        completed = list(info["episode_task_completions"])
        # A mixed episode ends once the expert has done its share and let go.
        truncated = truncated or (plan.mixed and expert.finished)
        if record:
            observations.append(_copy_obs(obs))
            actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated and not terminated))
        if terminated or truncated:
            break
    result = {"index": plan.index, "seed": plan.seed, "mixed": plan.mixed, "order": plan.order,
              "completed": completed, "steps": len(rewards)}
    if record:
        result.update(observations=_stack_obs(observations), actions=np.asarray(actions, np.float64),
                      rewards=np.asarray(rewards, np.float64), terminations=np.asarray(terminations),
                      truncations=np.asarray(truncations))
    return result


def _copy_obs(obs: dict) -> dict:
    return {"observation": np.array(obs["observation"], dtype=np.float64, copy=True),
            "achieved_goal": {k: np.array(v, np.float64, copy=True) for k, v in obs["achieved_goal"].items()},
            "desired_goal": {k: np.array(v, np.float64, copy=True) for k, v in obs["desired_goal"].items()}}


def _stack_obs(observations: list[dict]) -> dict:
    first = observations[0]
    return {"observation": np.stack([o["observation"] for o in observations]),
            "achieved_goal": {k: np.stack([o["achieved_goal"][k] for o in observations])
                              for k in first["achieved_goal"]},
            "desired_goal": {k: np.stack([o["desired_goal"][k] for o in observations])
                             for k in first["desired_goal"]}}


# A worker process keeps one env for all its episodes.
_WORKER_ENVS: dict[tuple[str, ...], gym.Env] = {}


def _worker_episode(job: tuple[EpisodePlan, Settings, bool]) -> dict:
    plan, settings, record = job
    env = _WORKER_ENVS.get(settings.tasks)
    if env is None:
        env = _WORKER_ENVS[settings.tasks] = make_env(settings.tasks)
    return run_episode(env, plan, settings, record)


def _run_all(plans: list[EpisodePlan], settings: Settings, workers: int, record: bool,
             progress: bool, description: str) -> list[dict]:
    """Run the planned episodes (in `workers` processes when > 1), in plan order."""
    from mage_jax.progress import progress_bar

    jobs = [(plan, settings, record) for plan in plans]
    bar = progress_bar(len(jobs), description, "ep", disable=not progress)
    results = []
    try:
        if workers == 1:
            for job in jobs:
                results.append(_worker_episode(job))
                bar.update()
        else:
            # forkserver: the parent may already run JAX threads, which a plain fork would copy.
            context = multiprocessing.get_context("forkserver")
            # Import MuJoCo and the envs once in the server, not in every worker.
            context.set_forkserver_preload(["gymnasium_robotics", "mage_jax.datasets.kitchen_expert"])
            with context.Pool(workers) as pool:
                for result in pool.imap_unordered(_worker_episode, jobs):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
        if workers == 1:
            _close_worker_envs()
    return sorted(results, key=lambda r: r["index"])


def _close_worker_envs() -> None:
    for env in _WORKER_ENVS.values():
        env.close()
    _WORKER_ENVS.clear()


# ---------------------------------------------------------------------------------------- dataset
@dataclasses.dataclass(frozen=True)
class GenerationSummary:
    dataset_id: str
    path: str
    episodes: int
    steps: int
    mean_tasks_completed: float
    all_tasks_fraction: float  # among the episodes that attempt every task
    steps_per_second: float  # environment steps (expert included) per second of collection

    def lines(self) -> list[str]:
        return [f"dataset: {self.dataset_id}", f"path: {self.path}", f"episodes: {self.episodes}",
                f"steps: {self.steps}", f"mean tasks completed: {self.mean_tasks_completed:.3f}",
                f"full episodes completing every task: {self.all_tasks_fraction:.3f}",
                f"collection speed: {self.steps_per_second:.0f} steps/s"]


def generate_kitchen_dataset(dataset_id: str = DEFAULT_DATASET_ID, episodes: int = 300,
                             mixed_fraction: float = 0.3, tasks: Sequence[str] = DEFAULT_TASKS,
                             seed: int = 0, noise: float = DEFAULT_NOISE,
                             init_perturbation: float = DEFAULT_INIT_PERTURBATION, workers: int = 1,
                             overwrite: bool = False, progress: bool = True) -> str:
    """Write scripted FrankaKitchen demonstrations as the local Minari dataset `dataset_id`; returns the id.

    Raises ValueError for bad arguments and FileExistsError when the id exists and not `overwrite`.
    """
    return write_kitchen_dataset(dataset_id, episodes, mixed_fraction, tasks, seed, noise,
                                 init_perturbation, workers, overwrite, progress).dataset_id


def write_kitchen_dataset(dataset_id: str = DEFAULT_DATASET_ID, episodes: int = 300,
                          mixed_fraction: float = 0.3, tasks: Sequence[str] = DEFAULT_TASKS,
                          seed: int = 0, noise: float = DEFAULT_NOISE,
                          init_perturbation: float = DEFAULT_INIT_PERTURBATION, workers: int = 1,
                          overwrite: bool = False, progress: bool = True) -> GenerationSummary:
    """`generate_kitchen_dataset`, returning the summary (counts, speed, path) the CLI prints."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from mage_jax.data.minari_source import minari_datasets_path, validate_dataset_id

    tasks = _check_arguments(episodes=episodes, mixed_fraction=mixed_fraction, tasks=tasks,
                             noise=noise, init_perturbation=init_perturbation, workers=workers)
    validate_dataset_id(dataset_id)
    path = os.path.join(minari_datasets_path(), dataset_id)
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {path}; pass "
                                  "overwrite=True (--overwrite) to replace it, or choose another id")
        minari.delete_dataset(dataset_id)

    settings = Settings(tasks, float(noise), float(init_perturbation))
    plans = plan_episodes(episodes, mixed_fraction, tasks, seed)
    start = time.perf_counter()
    results = _run_all(plans, settings, workers, record=True, progress=progress,
                       description=f"kitchen {dataset_id}")
    elapsed = time.perf_counter() - start
    buffers = [EpisodeBuffer(id=r["index"], seed=r["seed"], observations=r["observations"],
                             actions=r["actions"], rewards=r["rewards"], terminations=r["terminations"],
                             truncations=r["truncations"]) for r in results]
    env = make_env(tasks)
    with warnings.catch_warnings():  # minari nags about author/permalink fields we leave empty
        warnings.simplefilter("ignore", UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id, buffers, env=eval_env_spec(tasks), eval_env=eval_env_spec(tasks),
            algorithm_name="mage_jax scripted KitchenExpert (DLS Jacobian waypoints)",
            author="mage_jax", observation_space=env.observation_space, action_space=env.action_space,
            description=(f"Scripted FrankaKitchen-v1 demonstrations for tasks {list(tasks)}: "
                         f"{episodes} episodes, {mixed_fraction:.0%} doing a random subset in random "
                         f"order; action noise {noise}, initial arm perturbation {init_perturbation} rad."))
    env.close()
    dataset.storage.update_metadata({
        "tasks": list(tasks), "mixed_fraction": float(mixed_fraction), "noise": float(noise),
        "init_perturbation": float(init_perturbation), "seed": int(seed),
        "generator": "mage_jax.datasets.kitchen"})
    steps = sum(r["steps"] for r in results)
    full = [r for r in results if not r["mixed"]]
    return GenerationSummary(
        dataset_id=dataset_id, path=path, episodes=len(results), steps=steps,
        mean_tasks_completed=float(np.mean([len(r["completed"]) for r in results])),
        all_tasks_fraction=float(np.mean([set(tasks) <= set(r["completed"]) for r in full])) if full
        else float("nan"),
        steps_per_second=steps / max(elapsed, 1e-9))


def _check_arguments(episodes, mixed_fraction, tasks, noise, init_perturbation, workers) -> tuple[str, ...]:
    """One clear ValueError per bad argument; returns the tasks as a tuple."""
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in KNOWN_TASKS]
    if not tasks or unknown or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names from {list(KNOWN_TASKS)}, got {list(tasks)}")
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not 0.0 <= mixed_fraction <= 1.0:
        raise ValueError(f"mixed_fraction must lie in [0, 1], got {mixed_fraction!r}")
    if noise < 0 or init_perturbation < 0:
        raise ValueError(f"noise and init_perturbation must be >= 0, got {noise!r} and {init_perturbation!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return tasks


# ---------------------------------------------------------------------------------------- evaluation
def evaluate_expert(num_seeds: int = 50, tasks: Sequence[str] = DEFAULT_TASKS, noise: float = DEFAULT_NOISE,
                    init_perturbation: float = DEFAULT_INIT_PERTURBATION, first_seed: int = 0,
                    workers: int = 1, progress: bool = True) -> dict:
    """The expert on the D4RL-convention eval env, seeds first_seed..first_seed+num_seeds-1.

    Returns per-task success rates, the share of episodes completing every task, the mean number of
    tasks completed, mean episode length and the speed in env steps per second.
    """
    tasks = _check_arguments(episodes=num_seeds, mixed_fraction=0.0, tasks=tasks, noise=noise,
                             init_perturbation=init_perturbation, workers=workers)
    settings = Settings(tasks, float(noise), float(init_perturbation))
    plans = [EpisodePlan(i, first_seed + i, tasks, mixed=False) for i in range(num_seeds)]
    start = time.perf_counter()
    results = _run_all(plans, settings, workers, record=False, progress=progress,
                       description="kitchen expert eval")
    elapsed = time.perf_counter() - start
    completed = [set(r["completed"]) for r in results]
    steps = [r["steps"] for r in results]
    return {"num_seeds": num_seeds, "tasks": list(tasks), "noise": float(noise),
            "init_perturbation": float(init_perturbation),
            "per_task_success": {t: float(np.mean([t in c for c in completed])) for t in tasks},
            "all_tasks_success": float(np.mean([set(tasks) <= c for c in completed])),
            "mean_tasks_completed": float(np.mean([len(c) for c in completed])),
            "mean_episode_steps": float(np.mean(steps)),
            "steps_per_second": sum(steps) / max(elapsed, 1e-9)}


# ---------------------------------------------------------------------------------------- CLI
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mage_jax.datasets.kitchen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                        help="comma-separated tasks, in the order the full episodes do them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE, help="arm action noise std")
    parser.add_argument("--init-perturbation", type=float, default=DEFAULT_INIT_PERTURBATION,
                        help="max initial arm joint offset (rad)")
    parser.add_argument("--mixed-fraction", type=float, default=0.3)
    parser.add_argument("--dataset-id", default=DEFAULT_DATASET_ID)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--evaluate-only", "--evaluate_only", action="store_true",
                        help="only measure the expert on the eval env; write nothing")
    parser.add_argument("--num-seeds", type=int, default=50, help="seeds for --evaluate-only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        if args.evaluate_only:
            report = evaluate_expert(args.num_seeds, args.tasks, args.noise, args.init_perturbation,
                                     first_seed=args.seed, workers=args.workers,
                                     progress=not args.no_progress)
            for key, value in report.items():
                print(f"{key}: {value}")
            return 0
        summary = write_kitchen_dataset(args.dataset_id, args.episodes, args.mixed_fraction, args.tasks,
                                        args.seed, args.noise, args.init_perturbation, args.workers,
                                        args.overwrite, progress=not args.no_progress)
    except (ValueError, FileExistsError, DatasetUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
