"""Metrics to TensorBoard event files and to `metrics.jsonl` (one JSON object per write).

With several training seeds (`train.num_seeds`), each write is one record of the mean over seeds
(as a one-seed run writes it) and one record per seed that carries its `"seed"`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np


def _scalars(metrics: dict) -> dict[str, float]:
    """Flatten metrics to named floats; a vector metric (e.g. per-scale usage) gets one name per entry."""
    out = {}
    for name, value in metrics.items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            out[name] = float(arr)
        else:
            for i, v in enumerate(arr.reshape(-1)):
                out[f"{name}/{i}"] = float(v)
    return out


class MetricsWriter:
    """Writes on process 0 only; other processes of a multi-host run write nothing."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.tensorboard_dir = os.path.join(workdir, "tensorboard")
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)

    def _tensorboard(self):
        """Opened at the first write, so that a run that fails before it leaves no empty event file."""
        if self._tb is None:
            from tensorboardX import SummaryWriter  # lazy: keeps `import mage_jax` light

            self._tb = SummaryWriter(self.tensorboard_dir)
        return self._tb

    def write(self, stage: str, step: int, metrics: dict, seeds: tuple[int, ...] | None = None,
              seed: int | None = None) -> None:
        """`seeds`: the metrics have a leading axis over these training seeds; `seed`: the metrics
        are one training seed's."""
        if not self.enabled:
            return
        now = time.time()
        if seeds is None:
            records = [(seed, _scalars(metrics))]
        else:
            arrays = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
            records = [(None, _scalars({k: v.mean(axis=0) for k, v in arrays.items()}))]
            records += [(s, _scalars({k: v[i] for k, v in arrays.items()})) for i, s in enumerate(seeds)]
        tensorboard = self._tensorboard()
        with open(self.jsonl_path, "a") as f:
            for seed, scalars in records:
                tag = stage if seed is None else f"{stage}_seed{seed}"
                for name, value in scalars.items():
                    tensorboard.add_scalar(f"{tag}/{name}", value, step)
                extra = {} if seed is None else {"seed": seed}
                f.write(json.dumps({"stage": stage, "step": int(step), "time": now, **extra,
                                    **scalars}) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
