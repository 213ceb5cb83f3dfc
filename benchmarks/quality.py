"""MAGE against behaviour cloning on identical data, seeds and scoring; prints a markdown table.

    python benchmarks/quality.py --datasets=umaze,medium,large,kitchen --seeds=0,1,2 \
        --runs=runs/quality [--steps=N] [--out=table.md] [-- more launcher flags]

Each (dataset, algorithm, training seed) is one launcher run (`python -m mage_jax.main`) in its own
workdir under --runs, at the `cpu` size with the config's own budget (or, with --steps, N updates for
MAGE's stages 1 and 2). BC trains with its own converged budget (`config.bc`: a 256x3 MLP, 50,000
updates at batch 256), not MAGE's. Two datasets of each local PointMaze recipe (generator seeds 0 and
1, `...-data1`) and D4RL's recipe (`...-d4rl`, goals redrawn on arrival) are available. Finished runs
are not retrained: their eval_results.json is read back, so the script can be interrupted and re-run.
Columns: the headline score and success rate (mean ± s.e. over evaluation seeds, per training seed,
then over training seeds), the held-out action error of the acting path (MAGE: the acting head on
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


def run_one(config: str, algorithm: str, seed: int, steps: int | None, workdir: str,
            extra: list[str]) -> dict:
    """Train + evaluate (or read back a finished run); returns eval_results.json plus the wall time."""
    results_path = os.path.join(workdir, "eval_results.json")
    budget = [] if steps is None or algorithm == "bc" else [f"--config.stage1.num_steps={steps}",
                                                            f"--config.stage2.num_steps={steps}"]
    command = [sys.executable, "-m", "mage_jax.main", f"--config={config}", f"--workdir={workdir}",
               f"--config.algorithm={algorithm}", f"--config.seed={seed}", *budget, *extra]
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


def _mean_and_stderr(values: list[float]) -> str:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1) / np.sqrt(len(values)):.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| dataset | algorithm | metric | score per training seed (± s.e. over eval seeds) | "
             "mean ± s.e. over training seeds | success rate | held-out action MSE | wall time per run |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        runs = row["runs"]
        per_run = [r["headline"] for r in runs]
        success = [r["aggregate"]["success_rate"]["mean"] for r in runs if "success_rate" in r["aggregate"]]
        errors = [r["action_error"] for r in runs if r["action_error"] is not None]
        lines.append(
            f"| {row['dataset']} | {row['algorithm']} | {per_run[0]['metric']} | "
            + ", ".join(f"{h['mean']:.1f} ± {h['stderr']:.1f}" for h in per_run)
            + f" | **{_mean_and_stderr([h['mean'] for h in per_run])}** (n={len(runs)}) | "
            + (f"{_mean_and_stderr(success)}%" if success else "—") + " | "
            + (f"{np.mean(errors):.3f}" if errors else "—") + " | "
            + f"{np.mean([r['wall_s'] for r in runs]) / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--datasets", default="umaze,medium,kitchen", help=f"from {sorted(CONFIGS)}")
    parser.add_argument("--algorithms", default="mage,bc")
    parser.add_argument("--steps", type=int, default=None,
                        help="updates for stages 1 and 2 (default: the config's own budget)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
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
            runs = [run_one(CONFIGS[dataset], algorithm, int(seed), args.steps,
                            os.path.join(args.runs, f"{dataset}_{algorithm}_seed{seed}_{budget}"),
                            args.extra)
                    for seed in args.seeds.split(",")]
            rows.append({"dataset": dataset, "algorithm": algorithm, "steps": args.steps, "runs": runs})
    text = table(rows)
    commands = "\n".join(r["command"] for row in rows for r in row["runs"])
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"{text}\n\nCommands (`python -m ...`):\n\n```\n{commands}\n```\n")
    print(text)


if __name__ == "__main__":
    main()
