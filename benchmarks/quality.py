"""MAGE against behaviour cloning on identical data, seeds and scoring; writes a markdown table.

    python benchmarks/quality.py --datasets=umaze,medium,kitchen --steps=4000 --seeds=0 \
        --out=benchmarks/QUALITY.md

Each (dataset, algorithm, training seed) is one launcher run (`python -m mage_jax.main`) in its own
workdir under --runs, at the `cpu` size with the given step budget per stage (BC trains for the same
number of steps as one MAGE stage). Finished runs are not retrained: their eval_results.json is read
back, so the script can be interrupted and re-run. Wall time = the span of the run's logged training
steps (from metrics.jsonl, so it excludes start-up and compilation before the first log) + evaluation.
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
    "kitchen": "experiments/kitchen.py:scripted,cpu",
}
ALGORITHMS = ("mage", "bc")


def run_one(config: str, algorithm: str, seed: int, steps: int, workdir: str, extra: list[str]) -> dict:
    """Train + evaluate (or read back a finished run); returns eval_results.json plus the wall time."""
    results_path = os.path.join(workdir, "eval_results.json")
    command = [sys.executable, "-m", "mage_jax.main", f"--config={config}", f"--workdir={workdir}",
               f"--config.algorithm={algorithm}", f"--config.seed={seed}",
               f"--config.stage1.num_steps={steps}", f"--config.stage2.num_steps={steps}", *extra]
    if not os.path.exists(results_path):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    with open(results_path) as f:
        results = json.load(f)
    results["command"] = " ".join(command[1:])
    results["wall_s"] = _training_seconds(workdir) + results["wall_time_s"]
    return results


def _training_seconds(workdir: str) -> float:
    """Span of the run's metrics.jsonl timestamps (first to last logged training step)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        times = [json.loads(line)["time"] for line in f if '"eval"' not in line]
    return max(times) - min(times) if times else 0.0


def table(rows: list[dict]) -> str:
    lines = ["| dataset | algorithm | metric | score (mean ± s.e. over eval seeds) | training seeds | "
             "mean over training seeds | steps per stage | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        per_run = [r["headline"] for r in row["runs"]]
        means = np.array([h["mean"] for h in per_run])
        over_seeds = (f"{means.mean():.1f} ± {means.std(ddof=1) / np.sqrt(len(means)):.1f}"
                      if len(means) > 1 else "-")
        first = per_run[0]
        lines.append(f"| {row['dataset']} | {row['algorithm']} | {first['metric']} | "
                     f"{first['mean']:.1f} ± {first['stderr']:.1f} (n={first['n']}) | {len(means)} | "
                     f"{over_seeds} | {row['steps']} | {sum(r['wall_s'] for r in row['runs']):.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--datasets", default="umaze,medium,kitchen", help=f"from {sorted(CONFIGS)}")
    parser.add_argument("--algorithms", default="mage,bc")
    parser.add_argument("--steps", type=int, default=4000, help="updates per stage")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    parser.add_argument("--runs", default="runs/quality", help="parent folder of the workdirs")
    parser.add_argument("--out", default="benchmarks/QUALITY.md")
    parser.add_argument("extra", nargs="*", help="more launcher flags, after --")
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets.split(","):
        if dataset not in CONFIGS:
            parser.error(f"unknown dataset {dataset!r}; choose from {sorted(CONFIGS)}")
        for algorithm in args.algorithms.split(","):
            if algorithm not in ALGORITHMS:
                parser.error(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
            runs = [run_one(CONFIGS[dataset], algorithm, int(seed), args.steps,
                            os.path.join(args.runs, f"{dataset}_{algorithm}_seed{seed}_{args.steps}"),
                            args.extra)
                    for seed in args.seeds.split(",")]
            rows.append({"dataset": dataset, "algorithm": algorithm, "steps": args.steps, "runs": runs})
    text = table(rows)
    commands = "\n".join(r["command"] for row in rows for r in row["runs"])
    with open(args.out, "w") as f:
        f.write(f"# MAGE vs behaviour cloning\n\n{text}\n\n"
                f"Commands (`python -m ...`):\n\n```\n{commands}\n```\n")
    print(text)


if __name__ == "__main__":
    main()
