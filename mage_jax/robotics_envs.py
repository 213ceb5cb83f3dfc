"""Registering the gymnasium-robotics env ids (Maze, Kitchen, Adroit) once per process."""

import functools

import gymnasium as gym


@functools.cache
def register_robotics_envs() -> None:
    import gymnasium_robotics  # heavy import: only when an env is actually built

    gym.register_envs(gymnasium_robotics)
