"""The env layouts of the public datasets each benchmark family loads, for recording local look-alikes.

`env_layout(env_id)` says how to build the collection env and the eval env so that a recorded dataset
has the layout of the public one:

  * AntMaze (`AntMaze_{UMaze,Medium,Large}-v4`, as `D4RL/antmaze/*-v1`): dict observations
    (27-D `observation`, 2-D `achieved_goal` / `desired_goal`); collection with `continuing_task=True,
    reset_target=False`, episodes truncated at the registered horizon (700 UMaze, 1000 otherwise). UMaze
    collects on D4RL's fixed map (goal cell (1, 1), reset cell (3, 1)); Medium and Large on the
    registered maps (any free cell, the "diverse" recipe). The eval env is D4RL's eval map (one reset
    and one goal cell; for UMaze D4RL's `U_MAZE_EVAL`, the mirror image of the training U, as Minari's
    generation script stores it) with `continuing_task=False`: success ends the episode, as the
    scoring uses it.
  * Adroit (`AdroitHand{Pen,Door,Hammer,Relocate}-v1`, as `D4RL/<task>/*-v2`): Box observations,
    D4RL horizons (pen 100, the others 200); collection env = eval env.
  * Locomotion (`{HalfCheetah,Hopper,Walker2d}-v5`, as `mujoco/<env>/*-v0`): Box observations,
    1000-step horizon, the env's own terminations; collection env = eval env.

Any other gymnasium id records with its registered spec as both envs. PointMaze and FrankaKitchen
have generators of their own (`mage_jax.datasets.pointmaze`, `mage_jax.datasets.kitchen`).
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from mage_jax.evaluation.envs import task_family_from_env_id
from mage_jax.robotics_envs import register_robotics_envs

# (reset cell, goal cell) of D4RL's antmaze eval maps, by maze name in the env id (UMaze: on the mirror).
ANTMAZE_EVAL_CELLS = {"UMaze": ((1, 3), (3, 3)), "Medium": ((1, 1), (6, 6)), "Large": ((1, 1), (7, 9))}
ANTMAZE_UMAZE_COLLECTION_CELLS = ((3, 1), (1, 1))  # D4RL antmaze-umaze: fixed reset and goal cell
ADROIT_HORIZONS = {"Pen": 100}  # D4RL horizons that differ from the registered 200 steps
OWN_GENERATORS = {"pointmaze": "mage_jax.datasets.pointmaze", "kitchen": "mage_jax.datasets.kitchen"}


@dataclasses.dataclass(frozen=True)
class EnvLayout:
    """How a family's public dataset was recorded: its collection env and its eval env."""

    family: str  # benchmark family (mage_jax.evaluation.envs.TASK_FAMILIES)
    collection: EnvSpec  # the env episodes are recorded in
    evaluation: EnvSpec  # the env stored as the dataset's eval env (the one scores come from)
    public_datasets: str  # the public ids whose layout this reproduces


def env_layout(env_id: str) -> EnvLayout:
    """The collection and eval env specs of the public datasets recorded in `env_id`."""
    register_robotics_envs()
    if env_id not in gym.registry:
        raise ValueError(f"unknown gymnasium env id {env_id!r}")
    family = task_family_from_env_id(env_id)
    if family in OWN_GENERATORS:
        raise ValueError(f"{env_id} is a {family} env: use `python -m {OWN_GENERATORS[family]}`, which "
                         "records that family's D4RL recipe")
    registered = gym.spec(env_id)
    if family == "antmaze":
        maze = _antmaze_name(env_id)
        collection_map = (_mark_cells(registered.kwargs["maze_map"], *ANTMAZE_UMAZE_COLLECTION_CELLS)
                          if maze == "UMaze" else registered.kwargs["maze_map"])
        collection = _spec(registered, maze_map=collection_map, continuing_task=True, reset_target=False)
        eval_map = registered.kwargs["maze_map"]
        if maze == "UMaze":  # D4RL's U_MAZE_EVAL opens on the other side
            eval_map = [list(reversed(row)) for row in eval_map]
        evaluation = _spec(registered, maze_map=_mark_cells(eval_map, *ANTMAZE_EVAL_CELLS[maze]),
                           continuing_task=False, reset_target=False)
        return EnvLayout(family, collection, evaluation, "D4RL/antmaze/*-v1")
    if family == "adroit":
        task = env_id.removeprefix("AdroitHand").split("-")[0].removesuffix("Sparse")
        horizon = ADROIT_HORIZONS.get(task, registered.max_episode_steps)
        spec = dataclasses.replace(registered, max_episode_steps=horizon)
        return EnvLayout(family, spec, spec, f"D4RL/{task.lower()}/*-v2")
    return EnvLayout(family, registered, registered, f"mujoco/{env_id.split('-')[0].lower()}/*-v0")


def _antmaze_name(env_id: str) -> str:
    name = env_id.removeprefix("AntMaze_").split("-")[0]
    if name not in ANTMAZE_EVAL_CELLS:
        raise ValueError(f"{env_id}: D4RL defines antmaze eval cells for "
                         f"{', '.join(f'AntMaze_{m}' for m in ANTMAZE_EVAL_CELLS)} only")
    return name


def _mark_cells(maze_map, reset_cell: tuple[int, int], goal_cell: tuple[int, int]) -> list[list]:
    """A copy of `maze_map` with exactly one reset cell `r` and one goal cell `g`."""
    layout = [[1 if cell == 1 else 0 for cell in row] for row in maze_map]
    for (row, col), mark in ((reset_cell, "r"), (goal_cell, "g")):
        if layout[row][col] == 1:
            raise AssertionError(f"cell {(row, col)} of the maze is a wall")
        layout[row][col] = mark
    return layout


def _spec(base: EnvSpec, **kwargs) -> EnvSpec:
    """`base` with extra constructor kwargs."""
    return dataclasses.replace(base, kwargs={**(base.kwargs or {}), **kwargs})
