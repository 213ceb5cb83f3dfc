"""Figures saved as PNGs into workdir/plots/: learning curves, per-seed scores, coarse-to-fine plans.

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot global state), so
plotting works headless and from any thread.
  * `plot_learning_curves(metrics.jsonl, workdir)`: one PNG per training stage, a panel per metric
    against the step. Families share a panel, one line each: vector metrics logged as `name/i`, and
    per-scale metrics `name_scale_k` (one line per scale k, coarse to fine along a colour map). Every
    line has markers, so a metric logged once (a stage's only validation) still shows. A run of
    several training seeds draws each seed's curve thin behind their mean.
  * `plot_seed_scores(eval_results, workdir)`: a bar per evaluation seed of the headline score.
  * `plot_plan(states (K, H, S), maze, workdir)`: the decoded plan after each of the K scales drawn
    over the maze walls (states' first two dims are the x, y position).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections import defaultdict
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

PLOTS_DIRNAME = "plots"
_NON_METRIC_KEYS = ("stage", "step", "time", "seed")
_SCALE_METRIC = re.compile(r"(.+)_scale_(\d+)")  # accuracy_scale_3: (accuracy, 3)
_BY_SCALE = " by scale"


def plots_dir(workdir: str) -> str:
    path = os.path.join(workdir, PLOTS_DIRNAME)
    os.makedirs(path, exist_ok=True)
    return path


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl; a truncated last line (a run still writing) is skipped."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics file at {path}; training writes workdir/metrics.jsonl")
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not a JSON object: {err}") from err
    return records


def plot_learning_curves(metrics_path: str, workdir: str) -> list[str]:
    """One `learning_curves_<stage>.png` per stage in metrics.jsonl; returns the written paths."""
    return [_save(fig, workdir, f"learning_curves_{_safe_name(stage)}.png")
            for stage, fig in learning_curve_figures(metrics_path).items()]


def learning_curve_figures(metrics_path: str) -> dict[str, Figure]:
    """The learning-curve figure of each stage in metrics.jsonl, by stage, unsaved."""
    by_stage: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    # stage -> training seed -> metric -> points (records with a "seed": one seed of several)
    by_seed: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in read_metrics(metrics_path):
        stage, step = record.get("stage", "train"), record.get("step")
        if step is None:
            continue
        target = by_stage[str(stage)] if "seed" not in record else by_seed[str(stage)][record["seed"]]
        for name, value in record.items():
            if name not in _NON_METRIC_KEYS and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                target[name].append((float(step), float(value)))
    if not by_stage:
        raise ValueError(f"{metrics_path} holds no (stage, step, metric) records to plot")
    figures = {}
    for stage, metrics in by_stage.items():
        panels = _group_panels(metrics)
        seed_panels = [_group_panels(m) for m in by_seed.get(stage, {}).values()]
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
        for index, (panel, series) in enumerate(panels.items()):
            ax = fig.add_subplot(rows, cols, index + 1)
            colors = _line_colors(len(series), by_scale=panel.endswith(_BY_SCALE))
            for (label, points), color in zip(series.items(), colors, strict=True):
                for seed_points in (p.get(panel, {}).get(label) for p in seed_panels):
                    if seed_points:
                        ax.plot(*np.array(sorted(seed_points)).T, color=color, linewidth=0.6, alpha=0.35)
                steps, values = np.array(sorted(points)).T
                # Markers (on at most ~20 points of a long curve) so that a single point shows.
                ax.plot(steps, values, label=label, color=color, linewidth=1.2, marker="o",
                        markersize=3.5, markevery=max(1, len(steps) // 20))
            if panel.startswith("loss") and all(v > 0 for s in series.values() for _, v in s):
                ax.set_yscale("log")
            steps_logged = {step for points in series.values() for step, _ in points}
            if len(steps_logged) == 1:  # one tick at the only step, not a range around it
                ax.set_xticks(sorted(steps_logged))
            ax.set_title(panel)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=6, ncol=2)
        fig.suptitle(f"{stage} learning curves")
        figures[stage] = fig
    return figures


def plot_seed_scores(results: dict | str, workdir: str, metric: str | None = None) -> str:
    """A bar per seed of `metric` (default: the results' headline score) with the mean +- stderr."""
    if isinstance(results, str):
        from mage_jax.evaluation.results import load_eval_results

        results = load_eval_results(results)
    per_seed = results.get("per_seed") or []
    metric = metric or results.get("headline", {}).get("metric", "return")
    if not per_seed or any(metric not in r for r in per_seed):
        raise ValueError(f"eval results have no per-seed {metric!r} to plot")
    seeds = [str(r.get("seed", i)) for i, r in enumerate(per_seed)]
    values = np.array([float(r[metric]) for r in per_seed])
    aggregate = results.get("aggregate", {}).get(metric, {})
    mean = aggregate.get("mean", float(values.mean()))
    stderr = aggregate.get("stderr", 0.0)
    fig = Figure(figsize=(max(5.0, 0.22 * len(values) + 2.0), 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(len(values)), values, color="tab:blue", alpha=0.8)
    ax.axhline(mean, color="tab:red", linewidth=1.5, label=f"mean {mean:.2f} ± {stderr:.2f}")
    ax.axhspan(mean - stderr, mean + stderr, color="tab:red", alpha=0.15)
    ax.set_xticks(np.arange(len(values)), seeds, rotation=90, fontsize=6)
    ax.set_xlabel("evaluation seed")
    ax.set_ylabel(metric)
    ax.set_title(f"{results.get('dataset_id', '')} step {results.get('checkpoint_step', '-')}")
    ax.legend(fontsize=8)
    return _save(fig, workdir, f"seed_scores_{_safe_name(metric)}.png")


@dataclasses.dataclass(frozen=True)
class MazeLayout:
    """A gymnasium_robotics maze's cells and their placement in x, y (Maze.cell_rowcol_to_xy)."""

    maze_map: tuple  # rows of cells; 1 = wall
    scaling: float  # maze_size_scaling: side of one cell
    x_center: float  # x_map_center
    y_center: float  # y_map_center

    @classmethod
    def from_maze(cls, maze: Any) -> MazeLayout:
        """From a gymnasium_robotics Maze, a maze env (any wrapping), or a MazeLayout."""
        if isinstance(maze, MazeLayout):
            return maze
        maze = getattr(getattr(maze, "unwrapped", None), "maze", maze)
        try:
            return cls(tuple(tuple(row) for row in maze.maze_map), float(maze.maze_size_scaling),
                       float(maze.x_map_center), float(maze.y_map_center))
        except AttributeError as err:
            raise ValueError(f"cannot read a maze layout from {type(maze).__name__}: pass a "
                             "gymnasium_robotics maze env, env.unwrapped.maze or a MazeLayout") from err

    def cell_xy(self, row: int, col: int) -> tuple[float, float]:
        return ((col + 0.5) * self.scaling - self.x_center, self.y_center - (row + 0.5) * self.scaling)


def plot_plan(states: np.ndarray, maze: Any, workdir: str, name: str = "plan.png",
              start: np.ndarray | None = None, goal: np.ndarray | None = None,
              title: str = "") -> str:
    """Each scale's decoded trajectory (states (K, H, S), x, y = dims 0, 1) over the maze walls."""
    states = np.asarray(states, np.float64)
    if states.ndim != 3 or states.shape[-1] < 2:
        raise ValueError(f"plan states must be (K scales, H steps, S >= 2) for one seed, got shape "
                         f"{states.shape} (index one seed of make_plan_trajectory's (N, K, H, S))")
    layout = MazeLayout.from_maze(maze)
    num_scales = states.shape[0]
    cols = min(4, num_scales)
    rows = math.ceil(num_scales / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows), layout="constrained")
    colors = np.linspace(0.0, 1.0, states.shape[1])
    for k in range(num_scales):
        ax = fig.add_subplot(rows, cols, k + 1)
        _draw_walls(ax, layout)
        xy = states[k, :, :2]
        ax.plot(xy[:, 0], xy[:, 1], color="0.4", linewidth=0.8)
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, cmap="viridis", s=8, zorder=3)
        if start is not None:
            ax.plot(*np.asarray(start)[:2], marker="o", color="tab:green", markersize=7, zorder=4)
        if goal is not None:
            ax.plot(*np.asarray(goal)[:2], marker="*", color="tab:red", markersize=11, zorder=4)
        ax.set_title(f"after scale {k + 1}/{num_scales}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, workdir, name)


def _draw_walls(ax, layout: MazeLayout) -> None:
    half = layout.scaling / 2
    for i, row in enumerate(layout.maze_map):
        for j, cell in enumerate(row):
            if cell == 1:
                x, y = layout.cell_xy(i, j)
                ax.add_patch(Rectangle((x - half, y - half), layout.scaling, layout.scaling,
                                       facecolor="0.25", edgecolor="none"))
    rows, cols = len(layout.maze_map), len(layout.maze_map[0])
    ax.set_xlim(-layout.x_center, cols * layout.scaling - layout.x_center)
    ax.set_ylim(layout.y_center - rows * layout.scaling, layout.y_center)


def _group_panels(metrics: dict[str, list]) -> dict[str, dict[str, list]]:
    """Metrics -> panels of labelled series, in name order.

    `loss` alone; `usage/0` and `usage/1` together in panel "usage"; `accuracy_scale_1` ..
    `accuracy_scale_8` in panel "accuracy by scale" as lines "scale 1" .. "scale 8", in scale order.
    """
    panels: dict[str, dict[str, list]] = defaultdict(dict)
    scaled: dict[str, dict[int, list]] = defaultdict(dict)
    for name in sorted(metrics):
        per_scale = _SCALE_METRIC.fullmatch(name)
        if per_scale:
            scaled[per_scale.group(1) + _BY_SCALE][int(per_scale.group(2))] = metrics[name]
        else:
            panels[name.partition("/")[0]][name] = metrics[name]
    for panel, series in scaled.items():
        panels[panel] = {f"scale {k}": series[k] for k in sorted(series)}
    return dict(sorted(panels.items()))


def _line_colors(count: int, by_scale: bool) -> list:
    """Scales coarse to fine along viridis; other families in the default colour cycle."""
    if by_scale and count > 1:
        return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, count)]
    return [f"C{i % 10}" for i in range(count)]


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _save(fig: Figure, workdir: str, name: str) -> str:
    path = os.path.join(plots_dir(workdir), name)
    fig.savefig(path, dpi=110)
    return path
