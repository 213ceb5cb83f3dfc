"""Evaluation environments built exactly as the benchmark scores them, as picklable factories.

`make_eval_envs(dataset, ...)` reads the Minari dataset's recorded environment and returns an
`EvalEnvSpec`: a zero-argument factory (a `functools.partial` of a module-level function, so an
`AsyncVectorEnv` with a "spawn"/"forkserver" context can pickle it) plus the kwargs it uses, which go
into `eval_results.json`. Per task family:

  * kitchen: `FrankaKitchen-v1` with the dataset's four `tasks_to_complete`,
    `remove_task_when_completed=True`, `terminate_on_tasks_completed=True`, 280 steps (D4RL's kitchen;
    Minari records a non-removing env whose returns count a task at every step it stays solved).
  * antmaze: the dataset's eval env with `continuing_task=False`, so an episode ends on success.
  * pointmaze: the dataset's eval env as recorded (Maze2D's score counts steps spent at the goal).
    `multi=True` draws a random start and goal cell per episode (Diffuser's Multi2D protocol).
  * adroit, locomotion: the env recorded in the dataset.

`make_env_spec_from_id("PointMaze_UMaze-v3", ...)` builds the same thing from a gymnasium id with no
dataset (tests, quick checks).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from mage_jax.robotics_envs import register_robotics_envs

TASK_FAMILIES = ("kitchen", "antmaze", "pointmaze", "adroit", "locomotion")
KITCHEN_ENV_ID = "FrankaKitchen-v1"
KITCHEN_MAX_STEPS = 280  # D4RL kitchen's horizon
_EXPECTED_OBS_FAMILY = {"kitchen": "kitchen", "antmaze": "antmaze", "pointmaze": "maze",
                        "adroit": "box", "locomotion": "box"}


@dataclasses.dataclass(frozen=True)
class EvalEnvSpec:
    """How to build one evaluation env: `factory()` returns a fresh env (TimeLimit'ed to max_steps)."""

    factory: Callable[[], gym.Env]
    kwargs: dict  # the env constructor kwargs (json-able), as used
    max_steps: int  # episode step limit
    family: str  # one of TASK_FAMILIES
    env_id: str = ""
    multi: bool = False  # pointmaze: random start and goal cell per episode

    def describe(self) -> dict:
        """A json-able record of the env, for eval_results.json."""
        return {"env_id": self.env_id, "family": self.family, "max_steps": self.max_steps,
                "multi": self.multi, "env_kwargs": _jsonable(self.kwargs)}


def task_family_from_env_id(env_id: str) -> str:
    """FrankaKitchen -> kitchen, AntMaze -> antmaze, PointMaze -> pointmaze, AdroitHand -> adroit,
    anything else -> locomotion."""
    name = env_id.split("/")[-1].lower()
    if name.startswith("frankakitchen"):
        return "kitchen"
    if name.startswith("antmaze"):
        return "antmaze"
    if name.startswith("pointmaze"):
        return "pointmaze"
    if name.startswith("adroithand"):
        return "adroit"
    return "locomotion"


def make_eval_envs(dataset: Any, obs_family: str, max_steps: int = 0,
                   multi: bool = False) -> EvalEnvSpec:
    """The evaluation env of a MinariDataset (see the module docstring for each family).

    `max_steps` = 0 keeps the env's own horizon (280 for kitchen); `multi` only applies to pointmaze.
    """
    dataset_id = getattr(getattr(dataset, "spec", None), "dataset_id", "?")
    env_spec = getattr(dataset.spec, "env_spec", None)
    eval_spec = _eval_env_spec(dataset) or env_spec
    if eval_spec is None:
        raise ValueError(f"dataset {dataset_id} records no environment (its env_spec is None), so "
                         "there is nothing to evaluate on; regenerate it with an env attached")
    family = task_family_from_env_id(eval_spec.id)
    # Adroit and locomotion: the env the data was collected in; mazes: the dataset's eval env.
    spec = eval_spec if family in ("antmaze", "pointmaze") else (env_spec or eval_spec)
    kwargs = dict(spec.kwargs or {})
    if family == "kitchen":
        tasks = kwargs.get("tasks_to_complete")
        if not tasks:
            raise ValueError(f"dataset {dataset_id}: its {spec.id} env records no "
                             "'tasks_to_complete'; the kitchen score needs the dataset's four tasks")
        kwargs["tasks_to_complete"] = list(tasks)
    if not max_steps and family != "kitchen":  # kitchen's horizon is D4RL's 280, not the recorded one
        max_steps = spec.max_episode_steps or 0
    entry_point = spec.entry_point if isinstance(spec.entry_point, str) else None
    return make_env_spec_from_id(spec.id, max_steps=max_steps, multi=multi, obs_family=obs_family,
                                 entry_point=entry_point, **kwargs)


def make_env_spec_from_id(env_id: str, max_steps: int = 0, multi: bool = False,
                          obs_family: str | None = None, entry_point: str | None = None,
                          **env_kwargs: Any) -> EvalEnvSpec:
    """An EvalEnvSpec from a gymnasium id (e.g. 'PointMaze_UMaze-v3') and constructor kwargs.

    The family's scoring protocol is applied on top of `env_kwargs` (kitchen: remove and terminate on
    completed tasks; antmaze: terminate on success). `max_steps` = 0 uses the registered horizon.
    `entry_point` ("module:Class") registers an id that gymnasium does not know (e.g. a dataset
    recorded with a custom env); registered ids ignore it.
    """
    register_robotics_envs()
    _register_if_unknown(env_id, entry_point)
    family = task_family_from_env_id(env_id)
    if obs_family is not None and obs_family != _EXPECTED_OBS_FAMILY[family]:
        raise ValueError(f"{env_id} is a {family} env, whose observations flatten with obs_family "
                         f"{_EXPECTED_OBS_FAMILY[family]!r}, but obs_family {obs_family!r} was given; "
                         "fix config.data.obs_family")
    if multi and family != "pointmaze":
        raise ValueError(f"eval.multi (random start and goal per episode) is only defined for "
                         f"pointmaze, but the env is {env_id} ({family}); set eval.multi=False")
    kwargs = dict(env_kwargs)
    if family == "kitchen":
        if env_id.split("/")[-1] != KITCHEN_ENV_ID:
            raise ValueError(f"kitchen is scored on {KITCHEN_ENV_ID}, got env {env_id}")
        kwargs.update(remove_task_when_completed=True, terminate_on_tasks_completed=True)
        default_steps = KITCHEN_MAX_STEPS
    else:
        if family == "antmaze":
            kwargs["continuing_task"] = False  # D4RL antmaze: the episode ends at the goal
        default_steps = _registered_max_steps(env_id)
    max_steps = int(max_steps) or default_steps
    if max_steps <= 0:
        raise ValueError(f"{env_id} has no registered step limit; set config.eval.max_steps > 0")
    factory = functools.partial(make_env, env_id, kwargs, max_steps, multi, entry_point)
    return EvalEnvSpec(factory=factory, kwargs=kwargs, max_steps=max_steps, family=family,
                       env_id=env_id, multi=multi)


def make_env(env_id: str, env_kwargs: Mapping[str, Any], max_steps: int, multi: bool = False,
             entry_point: str | None = None) -> gym.Env:
    """Build one evaluation env (module level so factories pickle into worker processes)."""
    register_robotics_envs()
    _register_if_unknown(env_id, entry_point)
    env = gym.make(env_id, max_episode_steps=max_steps, disable_env_checker=True, **env_kwargs)
    if multi:
        env = RandomStartGoal(env)
    return env


class RandomStartGoal(gym.Wrapper):
    """Multi2D: every reset places start and goal in two distinct random free cells of the maze.

    The cells are drawn from a generator seeded by the reset seed, so a fixed evaluation seed always
    gets the same start and goal; unseeded resets continue the sequence.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        maze_map = env.unwrapped.maze.maze_map
        self.free_cells = [(i, j) for i, row in enumerate(maze_map) for j, cell in enumerate(row)
                           if cell != 1]
        if len(self.free_cells) < 2:
            raise ValueError("the maze has fewer than two free cells; no start/goal pair exists")
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        reset_index, goal_index = self._rng.choice(len(self.free_cells), size=2, replace=False)
        cells = {"reset_cell": np.array(self.free_cells[reset_index]),
                 "goal_cell": np.array(self.free_cells[goal_index])}
        return self.env.reset(seed=seed, options={**cells, **(options or {})})


def _eval_env_spec(dataset: Any):
    """The dataset's eval EnvSpec (minari keeps it private; the metadata holds its json)."""
    spec = getattr(dataset.spec, "eval_env_spec", None) or getattr(dataset, "_eval_env_spec", None)
    if spec is not None:
        return spec
    storage = getattr(dataset, "storage", None)
    text = getattr(storage, "metadata", {}).get("eval_env_spec") if storage is not None else None
    if not text:
        return None
    # The same gymnasium 1.x compatibility edits minari applies to its env_spec json.
    text = (text.replace('"order_enforce": true,', "").replace('"apply_api_compatibility": false,', "")
            .replace('"autoreset": false, ', ""))
    return gym.envs.registration.EnvSpec.from_json(text)


def _register_if_unknown(env_id: str, entry_point: str | None) -> None:
    if entry_point and env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point)


def _registered_max_steps(env_id: str) -> int:
    try:
        return int(gym.spec(env_id).max_episode_steps or 0)
    except gym.error.Error as err:
        raise ValueError(f"unknown gymnasium env id {env_id!r}: {err}") from err


def _jsonable(value: Any) -> Any:
    """Env kwargs -> plain json types (numpy scalars / arrays become numbers / lists)."""
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))
