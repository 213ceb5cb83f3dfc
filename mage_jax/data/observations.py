"""Flatten Minari observations into (T, D) float32 state arrays in a fixed, documented key order.

Families (the state layout every model, normaliser and policy of a run shares):
  * ``kitchen``: ``observation`` only (59-D in D4RL kitchen-v2; the per-task goal dicts are dropped,
    the task set is fixed by the environment).
  * ``maze``:    ``observation`` ++ ``desired_goal`` (PointMaze 4 + 2): the goal is part of the state,
    which makes the (state, return) model goal-aware.
  * ``antmaze``: ``achieved_goal`` ++ ``observation`` ++ ``desired_goal`` (2 + 27 + 2). The ant's
    27-D ``observation`` leaves out its x-y position, which only ``achieved_goal`` carries; without it
    the state would not say where the ant is. Position first and goal last, as in ``maze``.
  * ``box``:     the observation array as it is (Adroit, MuJoCo locomotion), extra axes flattened.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

OBS_FAMILIES = ("kitchen", "maze", "antmaze", "box")
FAMILY_KEYS: dict[str, tuple[str, ...]] = {"kitchen": ("observation",),
                                           "maze": ("observation", "desired_goal"),
                                           "antmaze": ("achieved_goal", "observation", "desired_goal")}
_MAZE_NAMESPACES = ("pointmaze", "maze2d")


def flatten_observations(obs, family: str) -> np.ndarray:
    """Return the per-step states of one episode as a (T, D) float32 array.

    `obs` is what Minari gives for an episode: a dict of (T, ...) arrays for dict observation
    spaces, or a (T, ...) array for Box spaces. The key order per family is fixed (see the module
    docstring).
    """
    if family not in OBS_FAMILIES:
        raise ValueError(f"unknown observation family {family!r}; expected one of {OBS_FAMILIES} "
                         "(config.data.obs_family)")
    if family == "box":
        if isinstance(obs, Mapping):
            raise ValueError(f"obs_family 'box' expects array observations, got a dict with keys "
                             f"{sorted(obs)}; use 'kitchen', 'maze' or 'antmaze' for dict observations")
        return _as_steps(obs, "observations")
    if not isinstance(obs, Mapping):
        raise ValueError(f"obs_family {family!r} expects dict observations with keys "
                         f"{FAMILY_KEYS[family]}, got an array of shape {np.shape(obs)}; "
                         "use obs_family 'box' for array observations")
    missing = [k for k in FAMILY_KEYS[family] if k not in obs]
    if missing:
        raise ValueError(f"obs_family {family!r} needs observation keys {FAMILY_KEYS[family]}, but "
                         f"{missing} {'is' if len(missing) == 1 else 'are'} missing "
                         f"(keys present: {sorted(obs)})")
    parts = [_as_steps(obs[k], k) for k in FAMILY_KEYS[family]]
    lengths = {len(p) for p in parts}
    if len(lengths) != 1:
        raise ValueError(f"observation keys {FAMILY_KEYS[family]} have different step counts "
                         f"{[len(p) for p in parts]}")
    return np.concatenate(parts, axis=-1)


def infer_obs_family(dataset_id: str) -> str:
    """Guess the family from the id's namespace: kitchen -> kitchen, antmaze -> antmaze, point maze ->
    maze, else box."""
    namespace_parts = [part.lower() for part in dataset_id.split("/")[:-1]]
    if "kitchen" in namespace_parts:
        return "kitchen"
    if "antmaze" in namespace_parts:
        return "antmaze"
    if any(part in _MAZE_NAMESPACES for part in namespace_parts):
        return "maze"
    return "box"


def _as_steps(value, name: str) -> np.ndarray:
    """(T, ...) -> (T, D) float32; a (T,) array becomes (T, 1)."""
    if isinstance(value, Mapping):
        raise ValueError(f"observation entry {name!r} is itself a dict (keys {sorted(value)}); "
                         "only array entries can be flattened")
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 0:
        raise ValueError(f"observation entry {name!r} is a scalar; expected one row per step")
    return array.reshape(array.shape[0], -1)
