"""Scores from per-seed episode records: raw return, D4RL-convention score, Minari-normalised score.

A record is a dict with at least "return"; kitchen records carry "tasks_completed" and success-based
families carry "success" (see `RolloutResult.records`). Conventions (docs/design.md#scoring):
  * kitchen: 25 x tasks completed (of the dataset's four) in the task-removing FrankaKitchen env;
  * antmaze: 100 x success (reached the goal; the episode ends there);
  * normalised: 100 x (R - ref_min) / (ref_max - ref_min) with the dataset's reference scores.
Aggregates are the mean and the standard error of the mean (sample std / sqrt(n)) over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

KITCHEN_POINTS_PER_TASK = 25.0
D4RL_SCORED_FAMILIES = ("kitchen", "antmaze")
# What each headline metric is, for eval_results.json and the score table.
_D4RL_LABELS = {"kitchen": "D4RL score: 25 x tasks completed", "antmaze": "D4RL score: 100 x success"}
_LABELS = {"normalized_score": "normalised score: 100 x (return - ref_min) / (ref_max - ref_min)",
           "return": "raw episode return, NOT normalised: the dataset lacks the reference pair "
                     "(ref_min_score, ref_max_score)"}


def d4rl_score(record: dict, family: str) -> float | None:
    """The D4RL-convention score of one episode, or None for families scored otherwise."""
    if family == "kitchen":
        if record.get("tasks_completed") is None:
            raise ValueError("a kitchen record needs 'tasks_completed' (from the env's "
                             "episode_task_completions info) to be scored")
        return KITCHEN_POINTS_PER_TASK * float(record["tasks_completed"])
    if family == "antmaze":
        if record.get("success") is None:
            raise ValueError("an antmaze record needs 'success' (from the env's info['success']) "
                             "to be scored")
        return 100.0 * float(bool(record["success"]))
    return None


def normalized_score(episode_return: float | np.ndarray, ref_min: float,
                     ref_max: float) -> float | np.ndarray:
    """100 x (R - ref_min) / (ref_max - ref_min), as `minari.get_normalized_score` x 100."""
    if not ref_max > ref_min:
        raise ValueError(f"reference scores must satisfy ref_max > ref_min, got ref_min={ref_min}, "
                         f"ref_max={ref_max}")
    scores = 100.0 * (np.asarray(episode_return, np.float64) - ref_min) / (ref_max - ref_min)
    return float(scores) if scores.ndim == 0 else scores


def reference_scores(dataset: Any) -> tuple[float, float] | None:
    """(ref_min_score, ref_max_score) from a MinariDataset's metadata, or None when it has none."""
    metadata = getattr(getattr(dataset, "storage", None), "metadata", None) or {}
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if ref_min is None or ref_max is None:
        return None
    return float(np.asarray(ref_min).reshape(-1)[0]), float(np.asarray(ref_max).reshape(-1)[0])


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (ddof=1 std / sqrt(n)); the error of a single value is 0."""
    array = np.asarray(values, np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("cannot aggregate an empty list of scores (no seeds were evaluated)")
    stderr = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else 0.0
    return float(array.mean()), stderr


def score_episodes(records: Sequence[dict], family: str,
                   ref_scores: tuple[float, float] | None = None) -> dict:
    """Per-seed scores and their aggregates.

    Returns {"per_seed": [record + "d4rl_score" / "normalized_score" where defined],
             "aggregate": {metric: {"mean", "stderr", "n"}}} for metrics "return", "length",
    "success_rate" (x100, when recorded), "steps_to_success" (the first success's step, over the seeds
    that succeed), "tasks_completed" (kitchen), "d4rl_score" (kitchen, antmaze) and "normalized_score"
    (when `ref_scores` = (ref_min, ref_max) is given).
    """
    if not records:
        raise ValueError("no episode records to score")
    per_seed = []
    for record in records:
        if "return" not in record:
            raise ValueError(f"episode record {record} has no 'return'")
        scored = dict(record)
        d4rl = d4rl_score(record, family)
        if d4rl is not None:
            scored["d4rl_score"] = d4rl
        if ref_scores is not None:
            scored["normalized_score"] = normalized_score(record["return"], *ref_scores)
        per_seed.append(scored)

    aggregate = {}
    columns = {"return": [r["return"] for r in per_seed]}
    if all("length" in r for r in per_seed):
        columns["length"] = [r["length"] for r in per_seed]
    if all(r.get("success") is not None for r in per_seed):
        columns["success_rate"] = [100.0 * bool(r["success"]) for r in per_seed]
    reached = [r["first_success_step"] for r in per_seed if r.get("success") and r.get("first_success_step")]
    if reached:  # how fast the goal is reached, over the seeds that reach it
        columns["steps_to_success"] = reached
    if all(r.get("tasks_completed") is not None for r in per_seed):
        columns["tasks_completed"] = [r["tasks_completed"] for r in per_seed]
    for name in ("d4rl_score", "normalized_score"):
        if name in per_seed[0]:
            columns[name] = [r[name] for r in per_seed]
    for name, values in columns.items():
        mean, stderr = mean_and_stderr(values)
        aggregate[name] = {"mean": mean, "stderr": stderr, "n": len(values)}
    return {"per_seed": per_seed, "aggregate": aggregate}


def headline_metric(aggregate: dict) -> str:
    """The score to quote first: D4RL convention, else normalised, else raw return."""
    for name in ("d4rl_score", "normalized_score", "return"):
        if name in aggregate:
            return name
    raise ValueError(f"no score among the aggregates {sorted(aggregate)}")


def headline_label(metric: str, family: str) -> str:
    """One line saying what the headline `metric` of a `family` run is (raw returns say so plainly)."""
    if metric == "d4rl_score":
        return _D4RL_LABELS[family]
    if metric not in _LABELS:
        raise ValueError(f"no label for headline metric {metric!r}")
    return _LABELS[metric]
