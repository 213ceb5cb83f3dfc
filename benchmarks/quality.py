"""MAGE against behaviour cloning on identical data, seeds and scoring; prints a markdown table.

    python benchmarks/quality.py --datasets=umaze,medium,large,kitchen --num_seeds=3 \
        --runs=runs/quality [--steps=N] [--out=table.md] [-- more launcher flags]

Each (dataset, algorithm) is one launcher run (`python -m mage_jax.main`) of --num_seeds training
seeds trained together (`--config.train.num_seeds`, seeds --first_seed + 0..N-1) in its own workdir
under --runs, at the `cpu` size with the config's own budget (or, with --steps, N updates for
MAGE's stages 1 and 2). BC trains with its own converged budget (`config.bc`: a 256x3 MLP, 50,000
updates at batch 256), not MAGE's. Two datasets of each local PointMaze recipe (generator seeds 0 and
1, `...-data1`) and D4RL's recipe (`...-d4rl`, goals redrawn on arrival) are available. Finished runs
are not retrained: their eval_results.json is read back, so the script can be interrupted and re-run.
Columns: the headline score per training seed (mean ± s.e. over evaluation seeds), over training seeds
(mean ± s.e., and the IQM with its 95% stratified-bootstrap interval), the success rate, MAGE's
paired difference to BC (per training seed and evaluation seed; mean ± s.e. over training seeds),
the held-out action error of the acting path (MAGE: the acting head on
generated plans; BC: its MLP) and the wall time per run = the span of the run's logged steps (from
metrics.jsonl, so it excludes start-up and compilation before the first log) + evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

CONFIGS = {
    "umaze": "experiments/pointmaze.py:local,umaze,cpu",
    "medium": "experiments/pointmaze.py:local,medium,cpu",
    "medium-data1": "experiments/pointmaze.py:local,medium,cpu,data1",
    "medium-d4rl": "experiments/pointmaze.py:local,medium,d4rl,cpu",
    "medium-d4rl-data1": "experiments/pointmaze.py:local,medium,d4rl,cpu,data1",
    "large": "experiments/pointmaze.py:local,large,cpu",
    "kitchen": "experiments/kitchen.py:scripted,cpu",
}
# The held-out action error of the policy that acts (metrics.jsonl stage, key); the first present wins.
ACTION_ERROR = (("head_val", "action_mse_sampled_plan"),
                ("transformer_val", "action_mse_sampled_plan"), ("bc_val", "action_mse"))
ALGORITHMS = ("mage", "bc")


def run_one(config: str, algorithm: str, first_seed: int, num_seeds: int, steps: int | None,
            workdir: str, extra: list[str]) -> dict:
    """Train + evaluate (or read back a finished run); returns eval_results.json plus the wall time."""
    results_path = os.path.join(workdir, "eval_results.json")
    budget = [] if steps is None or algorithm == "bc" else [f"--config.stage1.num_steps={steps}",
                                                            f"--config.stage2.num_steps={steps}"]
    command = [sys.executable, "-m", "mage_jax.main", f"--config={config}", f"--workdir={workdir}",
               f"--config.algorithm={algorithm}", f"--config.seed={first_seed}",
               f"--config.train.num_seeds={num_seeds}", *budget, *extra]
    if not os.path.exists(results_path):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    with open(results_path) as f:
        results = json.load(f)
    results["command"] = " ".join(command[1:])
    results["wall_s"] = _training_seconds(workdir) + results["wall_time_s"]
    results["action_error"] = _held_out_action_error(workdir)
    return results


def _held_out_action_error(workdir: str) -> float | None:
    """The last held-out action error of the acting policy logged in metrics.jsonl."""
    last = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            last[record["stage"]] = record
    for stage, key in ACTION_ERROR:
        if key in last.get(stage, {}):
            return float(last[stage][key])
    return None


def _training_seconds(workdir: str) -> float:
    """Span of the run's metrics.jsonl timestamps (first to last logged training step)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        times = [json.loads(line)["time"] for line in f if '"eval"' not in line]
    return max(times) - min(times) if times else 0.0


def _mean_and_stderr(values) -> str:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1) / np.sqrt(len(values)):.1f}"


def per_training_seed(results: dict) -> list[dict]:
    """[{seed, aggregate, per_seed}] of a run of one or several training seeds."""
    if "per_training_seed" in results:
        return results["per_training_seed"]
    return [{"seed": None, "aggregate": results["aggregate"], "per_seed": results["per_seed"]}]


def paired_difference(run: dict, baseline: dict, metric: str) -> str:
    """Mean ± s.e. over training seeds of (run - baseline) on the same evaluation seeds."""
    diffs = []
    for a, b in zip(per_training_seed(run), per_training_seed(baseline), strict=True):
        ours = {r["seed"]: r[metric] for r in a["per_seed"]}
        theirs = {r["seed"]: r[metric] for r in b["per_seed"]}
        diffs.append(np.mean([ours[s] - theirs[s] for s in ours]))
    return _mean_and_stderr(diffs)


def table(rows: list[dict]) -> str:
    lines = ["| dataset | algorithm | metric | score per training seed (± s.e. over eval seeds) | "
             "mean ± s.e. over training seeds | IQM [95% CI] | success rate | MAGE − BC, paired | "
             "held-out action MSE | wall time per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    baselines = {row["dataset"]: row["results"] for row in rows if row["algorithm"] == "bc"}
    for row in rows:
        results = row["results"]
        metric = results["headline"]["metric"]
        seeds = per_training_seed(results)
        means = [s["aggregate"][metric]["mean"] for s in seeds]
        over = results.get("over_training_seeds")
        iqm = f"{over['iqm']:.1f} [{over['iqm_ci95'][0]:.1f}, {over['iqm_ci95'][1]:.1f}]" if over else "—"
        success = [s["aggregate"]["success_rate"]["mean"] for s in seeds
                   if "success_rate" in s["aggregate"]]
        baseline = baselines.get(row["dataset"])
        paired = (paired_difference(results, baseline, metric)
                  if row["algorithm"] != "bc" and baseline is not None else "—")
        error = results["action_error"]
        lines.append(
            f"| {row['dataset']} | {row['algorithm']} | {metric} | "
            + ", ".join(f"{s['aggregate'][metric]['mean']:.1f} ± {s['aggregate'][metric]['stderr']:.1f}"
                        for s in seeds)
            + f" | **{_mean_and_stderr(means)}** (n={len(seeds)}) | {iqm} | "
            + (f"{_mean_and_stderr(success)}%" if success else "—") + f" | {paired} | "
            + ("—" if error is None else f"{error:.3f}") + " | "
            + f"{results['wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--datasets", default="umaze,medium,kitchen", help=f"from {sorted(CONFIGS)}")
    parser.add_argument("--algorithms", default="mage,bc")
    parser.add_argument("--steps", type=int, default=None,
                        help="updates for stages 1 and 2 (default: the config's own budget)")
    parser.add_argument("--num_seeds", type=int, default=3, help="training seeds per run")
    parser.add_argument("--first_seed", type=int, default=0, help="the first training seed")
    parser.add_argument("--runs", default="runs/quality", help="parent folder of the workdirs")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("extra", nargs="*", help="more launcher flags, after --")
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets.split(","):
        if dataset not in CONFIGS:
            parser.error(f"unknown dataset {dataset!r}; choose from {sorted(CONFIGS)}")
        for algorithm in args.algorithms.split(","):
            if algorithm not in ALGORITHMS:
                parser.error(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
            budget = "config" if args.steps is None else args.steps
            seeds = f"seeds{args.first_seed}-{args.first_seed + args.num_seeds - 1}"
            results = run_one(CONFIGS[dataset], algorithm, args.first_seed, args.num_seeds, args.steps,
                              os.path.join(args.runs, f"{dataset}_{algorithm}_{seeds}_{budget}"),
                              args.extra)
            rows.append({"dataset": dataset, "algorithm": algorithm, "results": results})
    text = table(rows)
    commands = "\n".join(row["results"]["command"] for row in rows)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{text}\n\nCommands (`python -m ...`):\n\n```\n{commands}\n```\n")
    print(text)


if __name__ == "__main__":
    main()
