"""Batched rollout: N evaluation seeds stepped together in one gymnasium vector env.

Every step makes ONE policy call for all seeds:
    policy(observations (N, S) float32, returns_to_go (N,) float32, key) -> actions (N, A)
or (N, n, A) with `action_chunk` n > 1, whose n actions are executed in order before the next call.
Observations are flattened with `flatten_observations(obs, obs_family)`; the return-to-go passed is
the remaining (unscaled) return divided by `rtg_scale` (1.0 for a policy that scales it itself, like
the MAGE policy).

The vector env auto-resets a finished seed on its next step (gymnasium's NEXT_STEP mode); a
finished seed keeps being stepped but its rewards, infos and length are ignored from then on, so
each seed scores exactly one episode. Seeds are `seed_offset + i`, independent of the training seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
import types
from collections.abc import Callable

import gymnasium as gym
import jax
import numpy as np

from mage_jax.data.observations import flatten_observations
from mage_jax.evaluation.envs import EvalEnvSpec
from mage_jax.progress import progress_bar

Policy = Callable[[np.ndarray, np.ndarray, jax.Array], object]
VECTOR_MODES = ("sync", "async", "auto")
_SUCCESS_KEYS = ("success", "is_success")
_TASK_KEYS = ("episode_task_completions", "step_task_completions")  # FrankaKitchen infos


@dataclasses.dataclass(frozen=True)
class RolloutResult:
    """One episode per seed, plus timing."""

    seeds: np.ndarray  # (N,) int evaluation seeds
    returns: np.ndarray  # (N,) float64 undiscounted episode returns
    lengths: np.ndarray  # (N,) int steps until termination / truncation
    success: np.ndarray | None  # (N,) bool: reached success at any step (None: env reports none)
    first_success_step: np.ndarray | None  # (N,) int step (1-based) of the first success, 0 = never
    task_steps: list | None  # per seed, {kitchen task: step (1-based) it was completed} (None: not kitchen)
    final_returns_to_go: np.ndarray  # (N,) the return-to-go left at the end (unscaled)
    timing: dict  # wall_time_s, env_time_s, env_steps, env_steps_per_s, policy_calls, ...

    @property
    def num_seeds(self) -> int:
        return int(self.seeds.shape[0])

    def part(self, index: int, parts: int) -> RolloutResult:
        """Episodes `index` of `parts` equal consecutive blocks (one training seed of a `repeats`
        rollout); the timing is the whole rollout's."""
        n = self.num_seeds // parts
        block = slice(index * n, (index + 1) * n)

        def cut(x):
            return None if x is None else x[block]

        return dataclasses.replace(
            self, seeds=self.seeds[block], returns=self.returns[block], lengths=self.lengths[block],
            success=cut(self.success), first_success_step=cut(self.first_success_step),
            task_steps=cut(self.task_steps), final_returns_to_go=self.final_returns_to_go[block])

    @property
    def tasks_completed(self) -> np.ndarray | None:
        """(N,) int distinct kitchen tasks completed."""
        return None if self.task_steps is None else np.array([len(t) for t in self.task_steps], np.int64)

    @property
    def completed_tasks(self) -> list | None:
        """Per seed, the sorted names of the completed kitchen tasks."""
        return None if self.task_steps is None else [sorted(t) for t in self.task_steps]

    def records(self) -> list[dict]:
        """Per-seed records (plain python types), the input of `scoring.score_episodes`."""
        out = []
        for i in range(self.num_seeds):
            record = {"seed": int(self.seeds[i]), "return": float(self.returns[i]),
                      "length": int(self.lengths[i])}
            if self.success is not None:
                record["success"] = bool(self.success[i])
                record["first_success_step"] = int(self.first_success_step[i])
            if self.task_steps is not None:
                steps = self.task_steps[i]
                record.update(tasks_completed=len(steps), completed_tasks=sorted(steps),
                              task_steps=dict(steps))
            out.append(record)
        return out


def resolve_vector_mode(vector: str, family: str, num_envs: int) -> str:
    """'auto' -> 'async' for kitchen (MuJoCo-heavy steps) with several seeds and cores, else 'sync'."""
    if vector not in VECTOR_MODES:
        raise ValueError(f"vector env mode must be one of {VECTOR_MODES}, got {vector!r} "
                         "(config.eval.vector_env)")
    if vector != "auto":
        return vector
    cores = os.cpu_count() or 1
    return "async" if family == "kitchen" and num_envs > 1 and cores > 1 else "sync"


def make_vector_env(env_spec: EvalEnvSpec, num_envs: int, vector: str = "auto",
                    context: str | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of the eval env in a Sync or Async (worker process per env) vector env.

    Async workers start with `context` (default "forkserver" where available, else "spawn"): forking
    a process that has initialised JAX is unsafe, and both contexts pickle the factory.
    """
    mode = resolve_vector_mode(vector, env_spec.family, num_envs)
    factories = [env_spec.factory] * num_envs
    autoreset = gym.vector.AutoresetMode.NEXT_STEP
    if mode == "sync":
        return gym.vector.SyncVectorEnv(factories, autoreset_mode=autoreset)
    if context is None:
        methods = multiprocessing.get_all_start_methods()
        context = "forkserver" if "forkserver" in methods else "spawn"
    with _workers_skip_main_import(env_spec.factory):
        return gym.vector.AsyncVectorEnv(factories, context=context, autoreset_mode=autoreset)


@contextlib.contextmanager
def _workers_skip_main_import(factory: Callable):
    """Start workers without re-importing the parent's `__main__`.

    spawn / forkserver workers import the parent's main module before unpickling their factory; for a
    training run that is all of jax and flax in every worker (seconds and hundreds of MB each, times
    the number of seeds). A factory from an importable module does not need it, so `__main__` is
    hidden while the workers start.
    """
    module = getattr(getattr(factory, "func", factory), "__module__", "__main__")
    if module == "__main__":
        yield
        return
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__ / __spec__: nothing to import
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def evaluate_policy(policy: Policy, env_spec: EvalEnvSpec, num_seeds: int, seed_offset: int,
                    obs_family: str, target_return: float | np.ndarray,
                    decrement_return: bool = True, rtg_scale: float = 1.0, vector: str = "auto",
                    action_chunk: int = 1, progress: bool = True,
                    key: jax.Array | None = None,
                    vector_env: gym.vector.VectorEnv | None = None,
                    repeats: int = 1) -> RolloutResult:
    """Run one episode on each of the seeds `seed_offset + 0 .. num_seeds - 1` (see module docstring).

    `repeats` = R runs those seeds R times over, as R x num_seeds envs stepped together (the seeds
    tiled: envs r * num_seeds + i have seed `seed_offset + i`), e.g. one copy per training seed of a
    policy that acts for several (`train.num_seeds`); the result has R x num_seeds episodes.

    `target_return` (scalar or (N,)) is the initial unscaled return-to-go; with `decrement_return`
    each seed's return-to-go drops by its own reward every step. `vector_env` (from
    `make_vector_env(env_spec, num_seeds, ...)`) is reused and left open, which saves building the
    envs again for periodic evaluations (MuJoCo model compilation dominates short rollouts);
    otherwise one is built from `env_spec` and closed at the end.
    """
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds} (config.eval.num_seeds)")
    if action_chunk < 1:
        raise ValueError(f"action_chunk must be >= 1, got {action_chunk} (config.eval.action_chunk)")
    if rtg_scale <= 0:
        raise ValueError(f"rtg_scale must be > 0, got {rtg_scale}")
    seeds = np.tile(seed_offset + np.arange(num_seeds), repeats)
    num_seeds = seeds.shape[0]  # from here on: envs
    rtg = np.array(np.broadcast_to(np.asarray(target_return, np.float64), (num_seeds,)))
    if not np.all(np.isfinite(rtg)):
        raise ValueError(f"target_return must be finite, got {target_return}")
    key = jax.random.PRNGKey(0) if key is None else key

    if vector_env is not None and vector_env.num_envs != num_seeds:
        raise ValueError(f"the given vector env has {vector_env.num_envs} envs, but num_seeds is "
                         f"{num_seeds}; build it with make_vector_env(env_spec, {num_seeds})")
    start = time.perf_counter()
    envs = vector_env if vector_env is not None else make_vector_env(env_spec, num_seeds, vector)
    try:
        state = _EpisodeState(num_seeds)
        obs, _ = envs.reset(seed=[int(s) for s in seeds])
        action_dtype = envs.single_action_space.dtype
        env_time, policy_times, vector_steps = 0.0, [], 0
        bar = progress_bar(env_spec.max_steps, f"eval {env_spec.env_id or env_spec.family} x{num_seeds}",
                           "step", disable=not progress)
        while state.active.any() and vector_steps < env_spec.max_steps:
            states = flatten_observations(obs, obs_family)
            key, policy_key = jax.random.split(key)
            t0 = time.perf_counter()
            actions = np.asarray(policy(states, (rtg / rtg_scale).astype(np.float32), policy_key))
            policy_times.append(time.perf_counter() - t0)
            for action in _chunk_actions(actions, num_seeds, action_chunk):
                if not state.active.any() or vector_steps >= env_spec.max_steps:
                    break
                t0 = time.perf_counter()
                obs, rewards, terminated, truncated, infos = envs.step(action.astype(action_dtype))
                env_time += time.perf_counter() - t0
                vector_steps += 1
                collected = state.update(rewards, terminated, truncated, infos)
                if decrement_return:
                    rtg -= collected
                bar.update(1)
                bar.set_postfix(done=int(num_seeds - state.active.sum()))
        bar.close()
    finally:
        if vector_env is None:
            envs.close()
    wall = time.perf_counter() - start
    return RolloutResult(
        seeds=seeds, returns=state.returns, lengths=state.lengths,
        success=state.success if state.has_success else None,
        first_success_step=state.first_success_step if state.has_success else None,
        task_steps=state.tasks if state.has_tasks else None,
        final_returns_to_go=rtg, timing=_timing(wall, env_time, vector_steps, num_seeds,
                                                int(state.lengths.sum()), policy_times))


class _EpisodeState:
    """Per-seed accumulators; a seed stops contributing once its episode has ended."""

    def __init__(self, num_seeds: int):
        self.active = np.ones(num_seeds, bool)
        self.returns = np.zeros(num_seeds, np.float64)
        self.lengths = np.zeros(num_seeds, np.int64)
        self.success = np.zeros(num_seeds, bool)
        self.first_success_step = np.zeros(num_seeds, np.int64)
        self.has_success = False
        self.tasks: list[dict] = [{} for _ in range(num_seeds)]  # task -> step it was completed
        self.has_tasks = False

    def update(self, rewards, terminated, truncated, infos: dict) -> np.ndarray:
        """Account one vector step; returns the (N,) rewards credited (0 for finished seeds)."""
        active = self.active
        credited = np.where(active, np.asarray(rewards, np.float64), 0.0)
        self.returns += credited
        self.lengths += active
        for name in _SUCCESS_KEYS:
            values, present = _info_entry(infos, name, active.shape[0])
            if values is not None:
                hit = present & active
                first = hit & values.astype(bool) & ~self.success
                self.first_success_step[first] = self.lengths[first]
                self.success[hit] |= values[hit].astype(bool)
                self.has_success = True
        for name in _TASK_KEYS:
            values, present = _info_entry(infos, name, active.shape[0])
            if values is not None:
                self.has_tasks = True
                for i in np.flatnonzero(present & active):
                    for task in values[i] or ():
                        self.tasks[i].setdefault(task, int(self.lengths[i]))
        self.active = active & ~(np.asarray(terminated, bool) | np.asarray(truncated, bool))
        return credited


def _info_entry(infos: dict, name: str, num: int):
    """A vector env info key as (values (N,), present mask (N,)), or (None, None) if absent."""
    if name not in infos:
        return None, None
    values = np.asarray(infos[name], dtype=object if name in _TASK_KEYS else None)
    if values.shape[:1] != (num,):  # a scalar info broadcast by hand-built test infos
        values = np.array([infos[name]] * num, dtype=object)
    present = np.asarray(infos.get(f"_{name}", np.ones(num, bool)), bool)
    return values, present


def _chunk_actions(actions: np.ndarray, num_seeds: int, chunk: int):
    """Policy output -> the list of (N, A) actions to execute in order."""
    if chunk == 1 and actions.ndim == 2 and actions.shape[0] == num_seeds:
        return [actions]
    if actions.ndim == 3 and actions.shape[:2] == (num_seeds, chunk):
        return [actions[:, j] for j in range(chunk)]
    expected = f"({num_seeds}, A)" if chunk == 1 else f"({num_seeds}, {chunk}, A)"
    raise ValueError(f"the policy returned actions of shape {actions.shape}; with {num_seeds} seeds "
                     f"and action_chunk={chunk} it must return {expected}")


def _timing(wall: float, env_time: float, vector_steps: int, num_seeds: int, episode_steps: int,
            policy_times: list[float]) -> dict:
    calls = len(policy_times)
    # The first call includes jit compilation: report it apart from the steady-state mean.
    steady = policy_times[1:] if calls > 1 else policy_times
    env_steps = vector_steps * num_seeds
    return {"wall_time_s": wall, "env_time_s": env_time, "vector_steps": vector_steps,
            "env_steps": env_steps, "env_steps_per_s": env_steps / env_time if env_time > 0 else 0.0,
            "episode_steps": episode_steps,
            "episode_steps_per_s": episode_steps / wall if wall > 0 else 0.0,
            "policy_calls": calls, "policy_time_s": float(sum(policy_times)),
            "policy_ms_per_call": 1e3 * float(np.mean(steady)) if steady else 0.0,
            # per environment step (differs from per call when action chunks are executed)
            "policy_ms_per_step": 1e3 * float(sum(policy_times)) / vector_steps if vector_steps else 0.0,
            "policy_first_call_ms": 1e3 * policy_times[0] if calls else 0.0}
