"""Per-dimension state statistics, computed once from the dataset and saved with every checkpoint.

Only states are normalised. Returns-to-go are just divided by `rtg_scale` (in episodes.py) so the
evaluation-time decrement by collected reward stays exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mage_jax.data.episodes import EpisodeArrays

DEFAULT_MIN_STD = 1e-3  # constant dimensions (fixed goals, static objects) keep a finite scale


@dataclasses.dataclass(frozen=True, eq=False)
class NormStats:
    """State mean and (floored) standard deviation, each (S,) float32."""

    state_mean: np.ndarray
    state_std: np.ndarray

    def __post_init__(self):
        mean = np.asarray(self.state_mean, np.float32).reshape(-1)
        std = np.asarray(self.state_std, np.float32).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"state_mean has shape {mean.shape} but state_std {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("normalisation statistics must be finite with a positive std")
        object.__setattr__(self, "state_mean", mean)
        object.__setattr__(self, "state_std", std)

    def normalize(self, states):
        """(..., S) raw states -> normalised; works on numpy and jax arrays alike."""
        return (states - self.state_mean) / self.state_std

    def denormalize(self, states):
        """Inverse of `normalize`."""
        return states * self.state_std + self.state_mean

    def to_dict(self) -> dict:
        """JSON-serialisable form (plain lists of floats)."""
        return {"state_mean": self.state_mean.tolist(), "state_std": self.state_std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> NormStats:
        """Inverse of `to_dict`."""
        missing = {"state_mean", "state_std"} - set(data)
        if missing:
            raise ValueError(f"normalisation statistics lack {sorted(missing)}; got keys "
                             f"{sorted(data)}")
        return cls(np.asarray(data["state_mean"], np.float32),
                   np.asarray(data["state_std"], np.float32))


def compute_norm_stats(episodes: EpisodeArrays, min_std: float = DEFAULT_MIN_STD) -> NormStats:
    """Mean and std of the states over real (unpadded) steps; std floored at `min_std`.

    Two passes over the episodes in float64 (no float64 copy of the whole dataset).
    """
    real_states = [episodes.observations[i, :n] for i, n in enumerate(episodes.lengths)]
    total = float(episodes.lengths.sum())
    mean = sum(x.sum(axis=0, dtype=np.float64) for x in real_states) / total
    variance = sum(np.square(x - mean).sum(axis=0) for x in real_states) / total
    std = np.maximum(np.sqrt(variance), min_std)
    return NormStats(mean.astype(np.float32), std.astype(np.float32))
