"""`eval_results.json`: per-seed and aggregate scores with everything needed to reproduce them.

`build_results` (pure) assembles the record from a rollout, the env it ran in and the dataset's
reference scores; `write_eval_results` writes it atomically into the workdir; `format_score_table`
renders it for the log.

A run of several training seeds (`train.num_seeds` = N > 1) adds `training_seeds`,
`per_training_seed` (each seed's `aggregate` and `per_seed`) and `over_training_seeds` (the headline
metric's mean, standard error, interquartile mean and 95% stratified-bootstrap interval of the IQM
across training seeds, by `rliable`); its `aggregate` pools all N x eval.num_seeds episodes, and its
`headline` is the mean and standard error across training seeds.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mage_jax.evaluation.envs import EvalEnvSpec
from mage_jax.evaluation.rollout import RolloutResult
from mage_jax.evaluation.scoring import (
    headline_label,
    headline_metric,
    mean_and_stderr,
    score_episodes,
)

RESULTS_FILENAME = "eval_results.json"
_METRIC_ORDER = ("d4rl_score", "normalized_score", "return", "success_rate", "tasks_completed",
                 "length")


def build_results(rollout: RolloutResult, env_spec: EvalEnvSpec, *, dataset_id: str,
                  checkpoint_step: int | None = None,
                  ref_scores: tuple[float, float] | None = None,
                  extra: dict | None = None) -> dict:
    """The eval_results.json record (json-able dict); `extra` entries are added at the top level."""
    scores = score_episodes(rollout.records(), env_spec.family, ref_scores)
    aggregate = scores["aggregate"]
    headline = headline_metric(aggregate)
    timing = dict(rollout.timing)
    results = {
        "dataset_id": dataset_id,
        "checkpoint_step": None if checkpoint_step is None else int(checkpoint_step),
        "family": env_spec.family,
        "env": env_spec.describe(),
        "num_seeds": rollout.num_seeds,
        "seeds": [int(s) for s in rollout.seeds],
        "reference_scores": (None if ref_scores is None else
                             {"ref_min_score": float(ref_scores[0]),
                              "ref_max_score": float(ref_scores[1])}),
        "headline": {"metric": headline, "label": headline_label(headline, env_spec.family),
                     **aggregate[headline]},
        "aggregate": aggregate,
        "per_seed": scores["per_seed"],
        "wall_time_s": timing["wall_time_s"],
        "env_steps_per_s": timing["env_steps_per_s"],
        "policy_ms_per_step": timing["policy_ms_per_step"],
        "timing": timing,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for name, value in (extra or {}).items():
        if name in results:
            raise ValueError(f"extra result entry {name!r} would overwrite a standard field")
        results[name] = value
    return _jsonable(results)


def build_seed_results(rollout: RolloutResult, training_seeds: Sequence[int], env_spec: EvalEnvSpec,
                       **kwargs) -> dict:
    """The record of a rollout of N training seeds (`evaluate_policy(..., repeats=N)`); `kwargs` as
    for `build_results`."""
    parts = [build_results(rollout.part(i, len(training_seeds)), env_spec, **kwargs)
             for i in range(len(training_seeds))]
    results = build_results(rollout, env_spec, **kwargs)
    for record, seed in zip(results["per_seed"], np.repeat(training_seeds, len(parts[0]["per_seed"])),
                            strict=True):
        record["training_seed"] = int(seed)
    metric = results["headline"]["metric"]
    over = seed_statistics([p["headline"]["mean"] for p in parts])
    results.update(
        num_seeds=parts[0]["num_seeds"], seeds=parts[0]["seeds"],
        headline={**results["headline"], **{k: over[k] for k in ("mean", "stderr", "n")}},
        training_seeds=[int(s) for s in training_seeds],
        per_training_seed=[{"seed": int(s), "aggregate": p["aggregate"], "per_seed": p["per_seed"]}
                           for s, p in zip(training_seeds, parts, strict=True)],
        over_training_seeds={"metric": metric, **over})
    return _jsonable(results)


def seed_statistics(scores: Sequence[float], reps: int = 2000) -> dict:
    """Mean, standard error, interquartile mean and the IQM's 95% stratified-bootstrap interval of
    per-training-seed scores (rliable's, as published comparisons report them; fixed resampling
    seed, so the same scores give the same interval)."""
    from rliable import library, metrics  # lazy: it imports pandas and arch (seconds)

    values = np.asarray(scores, np.float64).reshape(-1, 1)  # runs x tasks
    mean, stderr = mean_and_stderr(values)
    iqm = float(metrics.aggregate_iqm(values))
    # rliable 1.2's StratifiedBootstrap draws its resamples from numpy's global generator whatever
    # random_state it is given: seed that for the call and put the caller's state back.
    global_state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState rliable hands it
            warnings.simplefilter("ignore", FutureWarning)
            _, intervals = library.get_interval_estimates(
                {"scores": values}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
                random_state=np.random.RandomState(0))
    finally:
        np.random.set_state(global_state)
    low, high = (float(v) for v in np.asarray(intervals["scores"]).reshape(-1))
    return {"mean": mean, "stderr": stderr, "iqm": iqm, "iqm_ci95": [low, high],
            "n": int(values.shape[0]), "per_seed": [float(v) for v in values[:, 0]]}


def write_eval_results(workdir: str, results: dict, filename: str = RESULTS_FILENAME) -> str:
    """Write `results` to workdir/filename (via a temporary file, so readers never see half a file)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, filename)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(results), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load_eval_results(path: str) -> dict:
    """Read eval_results.json from a file path or a workdir holding one."""
    if os.path.isdir(path):
        path = os.path.join(path, RESULTS_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no evaluation results at {path}; run the evaluation first")
    with open(path) as f:
        return json.load(f)


def format_score_table(results: dict) -> str:
    """A plain-text table of the aggregate scores (mean +- stderr over seeds) and the timing."""
    env = results.get("env", {})
    step = results.get("checkpoint_step")
    seeds = f"{results.get('num_seeds', '?')} seeds"
    if results.get("training_seeds"):
        seeds = f"{len(results['training_seeds'])} training seeds x {seeds}"
    lines = [f"{results.get('dataset_id', '?')} | env {env.get('env_id', '?')} "
             f"({results.get('family', '?')}) | checkpoint step {'-' if step is None else step} | {seeds}"]
    label = results.get("headline", {}).get("label")
    if label:
        lines.append(f"  headline: {results['headline']['metric']} = {label}")
    lines.append(f"  {'metric':<18}{'mean':>12}{'stderr':>10}{'n':>6}")
    aggregate = results.get("aggregate", {})
    names = [n for n in _METRIC_ORDER if n in aggregate] + \
        [n for n in aggregate if n not in _METRIC_ORDER]
    for name in names:
        entry = aggregate[name]
        lines.append(f"  {name:<18}{entry['mean']:>12.3f}{entry['stderr']:>10.3f}{entry['n']:>6d}")
    over = results.get("over_training_seeds")
    if over:
        metric = over["metric"]
        lines.append(f"  {metric} by training seed (mean ± stderr over evaluation seeds):")
        for seed in results.get("per_training_seed", []):
            entry = seed["aggregate"][metric]
            lines.append(f"    seed {seed['seed']:<8}{entry['mean']:>10.3f} ± {entry['stderr']:.3f}")
        low, high = over["iqm_ci95"]
        lines.append(f"  over {over['n']} training seeds: mean {over['mean']:.3f} ± {over['stderr']:.3f}, "
                     f"IQM {over['iqm']:.3f} (95% CI {low:.3f} to {high:.3f})")
    timing = results.get("timing", {})
    if timing:
        lines.append(f"  wall {timing.get('wall_time_s', 0.0):.1f} s | env "
                     f"{timing.get('env_steps_per_s', 0.0):.0f} steps/s | policy "
                     f"{timing.get('policy_ms_per_call', 0.0):.2f} ms/call (first call "
                     f"{timing.get('policy_first_call_ms', 0.0):.0f} ms)")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """numpy scalars / arrays -> python numbers / lists; non-finite floats -> None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
