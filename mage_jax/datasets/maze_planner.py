"""Cell-level planning and the noisy-waypoint PD controller behind the PointMaze datasets.

This is the D4RL / Minari maze2d expert (`waypoint_controller.py`, `maze_solver.py`): a shortest path over
the maze's free cells (4-connected; BFS gives the same paths as their Q-iteration), intermediate waypoints at
cell centres jittered by -U(0, jitter) per axis, the exact goal as the final waypoint, advance when within
`waypoint_threshold`, and a PD law `p_gain * (waypoint - position) + d_gain * velocity` clipped to [-1, 1].
The controller is written on Python floats: it runs once per simulated step, so numpy's per-call cost on
2-vectors would dominate the generator's time.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

Cell = tuple[int, int]
# Neighbour order fixes which of several equally short paths is taken (up, down, left, right).
_MOVES: tuple[Cell, ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))


class MazePlanner:
    """Shortest paths between free cells of a maze map (1 = wall, anything else = free)."""

    def __init__(self, maze_map: Sequence[Sequence[int | str]]):
        self.maze_map = [list(row) for row in maze_map]
        self.free_cells: frozenset[Cell] = frozenset(
            (r, c) for r, row in enumerate(self.maze_map) for c, value in enumerate(row) if value != 1)
        if not self.free_cells:
            raise ValueError("maze map has no free cell (every entry is 1 = wall)")
        self._distances: dict[Cell, dict[Cell, int]] = {}

    def is_free(self, cell: Cell) -> bool:
        return tuple(cell) in self.free_cells

    def distances_to(self, goal: Cell) -> dict[Cell, int]:
        """Moves from every reachable free cell to `goal` (BFS from the goal, cached per goal)."""
        goal = self._checked(goal, "goal")
        if goal not in self._distances:
            distances = {goal: 0}
            queue = collections.deque([goal])
            while queue:
                r, c = queue.popleft()
                for dr, dc in _MOVES:
                    neighbour = (r + dr, c + dc)
                    if neighbour in self.free_cells and neighbour not in distances:
                        distances[neighbour] = distances[(r, c)] + 1
                        queue.append(neighbour)
            self._distances[goal] = distances
        return self._distances[goal]

    def next_cell(self, cell: Cell, goal: Cell) -> Cell:
        """The neighbour of `cell` one move closer to `goal` (`goal` itself when already there)."""
        cell = self._checked(cell, "cell")
        distances = self.distances_to(goal)
        if cell not in distances:
            raise ValueError(f"cell {cell} cannot reach goal cell {tuple(goal)}: they are not connected")
        if distances[cell] == 0:
            return cell
        r, c = cell
        for dr, dc in _MOVES:
            neighbour = (r + dr, c + dc)
            if distances.get(neighbour) == distances[cell] - 1:
                return neighbour
        raise AssertionError("BFS distances are inconsistent")  # unreachable by construction

    def shortest_path(self, start: Cell, goal: Cell) -> list[Cell]:
        """Cells from `start` to `goal`, both included, each a single move from the previous one."""
        path = [self._checked(start, "start")]
        while path[-1] != tuple(goal):
            path.append(self.next_cell(path[-1], goal))
        return path

    def nearest_free_cell(self, cell: Cell) -> Cell:
        """`cell` when free, else the closest free cell (a ball against a wall can round into it)."""
        cell = (int(cell[0]), int(cell[1]))
        if cell in self.free_cells:
            return cell
        return min(self.free_cells, key=lambda f: ((f[0] - cell[0]) ** 2 + (f[1] - cell[1]) ** 2, f))

    def _checked(self, cell: Cell, what: str) -> Cell:
        cell = (int(cell[0]), int(cell[1]))
        if cell not in self.free_cells:
            raise ValueError(f"{what} cell {cell} is a wall or outside the maze; free cells are the "
                             "entries of the maze map that are not 1")
        return cell


class WaypointController:
    """Follows planner waypoints to a goal position with a PD law; re-plans when the goal moves.

    `maze` is a gymnasium-robotics `Maze` (`env.unwrapped.maze`): it supplies the map and the
    cell <-> xy conversion.
    """

    def __init__(self, maze, rng: np.random.Generator | None = None, p_gain: float = 10.0,
                 d_gain: float = -1.0, waypoint_threshold: float = 0.1, jitter: float = 0.2):
        self.maze = maze
        self.planner = MazePlanner(maze.maze_map)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.p_gain, self.d_gain = float(p_gain), float(d_gain)
        self.threshold_sq = float(waypoint_threshold) ** 2
        self.jitter = float(jitter)
        self._centres = {cell: tuple(float(v) for v in maze.cell_rowcol_to_xy(np.array(cell)))
                         for cell in self.planner.free_cells}
        self.reset()

    def reset(self) -> None:
        """Forget the current plan (call at every environment reset)."""
        self._goal_xy: tuple[float, float] | None = None
        self._goal_cell: Cell | None = None
        self._waypoint_cell: Cell | None = None
        self._waypoint = (0.0, 0.0)

    def cell_of(self, x: float, y: float) -> Cell:
        row, col = self.maze.cell_xy_to_rowcol(np.array([x, y]))
        return self.planner.nearest_free_cell((row, col))

    def act(self, x: float, y: float, vx: float, vy: float, goal_x: float, goal_y: float,
            ) -> tuple[float, float]:
        """Action (ax, ay) in [-1, 1] for a ball at (x, y) moving at (vx, vy) towards (goal_x, goal_y)."""
        goal = self._goal_xy
        if goal is None or abs(goal_x - goal[0]) > 1e-3 or abs(goal_y - goal[1]) > 1e-3:
            self._replan(x, y, goal_x, goal_y)
        wx, wy = self._waypoint
        if (self._waypoint_cell != self._goal_cell
                and (wx - x) ** 2 + (wy - y) ** 2 <= self.threshold_sq):
            self._set_waypoint(self.planner.next_cell(self._waypoint_cell, self._goal_cell))
            wx, wy = self._waypoint
        ax = self.p_gain * (wx - x) + self.d_gain * vx
        ay = self.p_gain * (wy - y) + self.d_gain * vy
        return min(1.0, max(-1.0, ax)), min(1.0, max(-1.0, ay))

    def __call__(self, obs: dict) -> np.ndarray:
        """Minari-style policy on a PointMaze dict observation (e.g. as `expert_policy`)."""
        x, y, vx, vy = (float(v) for v in obs["observation"][:4])
        gx, gy = (float(v) for v in obs["desired_goal"])
        return np.array(self.act(x, y, vx, vy, gx, gy), dtype=np.float32)

    def _replan(self, x: float, y: float, goal_x: float, goal_y: float) -> None:
        self._goal_xy = (goal_x, goal_y)
        self._goal_cell = self.cell_of(goal_x, goal_y)
        self._set_waypoint(self.planner.next_cell(self.cell_of(x, y), self._goal_cell))

    def _set_waypoint(self, cell: Cell) -> None:
        self._waypoint_cell = cell
        if cell == self._goal_cell:
            self._waypoint = self._goal_xy
        else:
            cx, cy = self._centres[cell]
            jx, jy = self.rng.uniform(0.0, self.jitter, size=2)
            self._waypoint = (cx - float(jx), cy - float(jy))


def path_is_connected(path: Sequence[Cell]) -> bool:
    """True when consecutive cells of `path` are one 4-connected move apart."""
    return all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(path, path[1:], strict=False))

