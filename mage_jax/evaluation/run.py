"""Evaluate a trained policy of a run: rollouts over the fixed seeds, scores, eval_results.json, plots.

The policy is any jitted `act(params, observations, returns_to_go, key)` (MAGE's or the BC
baseline's), so both are scored on identical envs, seeds and conventions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from mage_jax.data.observations import flatten_observations
from mage_jax.evaluation import plots
from mage_jax.evaluation.envs import EvalEnvSpec, make_eval_envs
from mage_jax.evaluation.results import (
    build_results,
    build_seed_results,
    format_score_table,
    write_eval_results,
)
from mage_jax.evaluation.rollout import evaluate_policy
from mage_jax.evaluation.scoring import reference_scores
from mage_jax.evaluation.sharded import shard_policy
from mage_jax.training import sharding as sharding_lib
from mage_jax.training.seeds import select
from mage_jax.training.sharding import global_array

MAZE_FAMILIES = ("pointmaze", "antmaze")


def target_return(config, meta: dict) -> float:
    """config.eval.target_return, or the best undiscounted episode return in the data when < 0."""
    target = float(config.eval.target_return)
    return float(meta["best_episode_return"]) if target < 0 else target


def evaluate_run(ctx: Any, act: Callable, params: Any, step: int, *, plan: Callable | None = None,
                 final: bool = True, stage: str = "", env_spec: EvalEnvSpec | None = None) -> dict:
    """Roll out `act` on config.eval.num_seeds seeds; write results (and, when `final`, plots).

    Periodic evaluations pass final=False and the training `stage`: they write
    `eval_results_<stage>_<step>.json` (stages count their steps from 0, so the name needs both) and
    the score to the metrics log, and skip the plots.
    """
    config = ctx.config
    env_spec = env_spec or make_eval_envs(ctx.dataset, config.data.obs_family,
                                          max_steps=config.eval.max_steps, multi=config.eval.multi)
    target = target_return(config, ctx.meta)
    training_seeds = ctx.seeds or ()  # several training seeds: one block of envs each
    rollout = evaluate_policy(
        shard_policy(act, params, ctx.mesh, len(training_seeds)), env_spec,
        repeats=max(1, len(training_seeds)),
        num_seeds=config.eval.num_seeds, seed_offset=config.eval.seed_offset,
        obs_family=config.data.obs_family, target_return=target,
        decrement_return=config.eval.decrement_return, vector=config.eval.vector_env,
        action_chunk=config.eval.action_chunk, key=jax.random.PRNGKey(config.eval.seed_offset),
        progress=sharding_lib.is_main_process())
    kwargs = dict(dataset_id=config.data.dataset_id, checkpoint_step=step,
                  ref_scores=reference_scores(ctx.dataset),
                  extra={"algorithm": config.get("algorithm", "mage"), "target_return": target,
                         "learned_target": bool(config.sampling.learned_target)})
    results = (build_seed_results(rollout, training_seeds, env_spec, **kwargs) if training_seeds
               else build_results(rollout, env_spec, **kwargs))
    # Every process computes the plan (its params span all of them); process 0 draws it.
    plan_states = None
    if final:
        try:
            # The first training seed's plan.
            plan_states = _plan_states(ctx, env_spec, plan, select(params, 0, ctx.stacked), target)
        except Exception as error:  # noqa: BLE001 - a picture must not lose the results
            logging.warning("coarse-to-fine plan skipped: %s", error)
    if not sharding_lib.is_main_process():
        return results
    name = "eval_results.json" if final else f"eval_results_{stage}_{step}.json"
    path = write_eval_results(ctx.workdir, results, filename=name)
    ctx.writer.write("eval", step, {f"eval_{k}": v["mean"] for k, v in results["aggregate"].items()})
    for seed in results.get("per_training_seed", []):
        ctx.writer.write("eval", step, {f"eval_{k}": v["mean"] for k, v in seed["aggregate"].items()},
                         seed=seed["seed"])
    print(format_score_table(results))
    print(f"results: {path}")
    if final:
        figures = _plots(ctx, results, env_spec, plan_states)
        print("plots: " + ", ".join(figures))
    return results


def _plots(ctx, results: dict, env_spec: EvalEnvSpec, plan_states) -> list[str]:
    ctx.writer.flush()
    figures = list(plots.plot_learning_curves(os.path.join(ctx.workdir, "metrics.jsonl"), ctx.workdir))
    figures.append(plots.plot_seed_scores(results, ctx.workdir))
    if plan_states is not None:
        env = env_spec.factory()
        try:
            states, start = plan_states
            figures.append(plots.plot_plan(states, env, ctx.workdir, start=start[:2], goal=start[-2:],
                                           title=f"coarse-to-fine plan ({ctx.config.data.dataset_id})"))
        except Exception as error:  # noqa: BLE001 - a picture must not lose the results
            logging.warning("coarse-to-fine plan plot skipped: %s", error)
        finally:
            env.close()
    return figures


def _plan_states(ctx, env_spec: EvalEnvSpec, plan, params, target: float):
    """The decoded plan after scales 1..K from the first evaluation seed's start state, and that
    state; None when there is nothing to draw."""
    if plan is None or env_spec.family not in MAZE_FAMILIES:
        return None
    env = env_spec.factory()
    try:
        obs, _ = env.reset(seed=int(ctx.config.eval.seed_offset))
    finally:
        env.close()
    batched = jax.tree.map(lambda x: np.asarray(x)[None], obs)  # flattening expects a step axis
    state = flatten_observations(batched, ctx.config.data.obs_family)[0].astype(np.float32)
    replicated = sharding_lib.replicated(ctx.mesh)
    out = plan(params, global_array(state[None], replicated),
               global_array(np.array([target], np.float32), replicated),
               global_array(jax.device_get(jax.random.PRNGKey(0)), replicated))
    return np.asarray(out["states"])[0], state
