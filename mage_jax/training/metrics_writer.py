"""Metrics to TensorBoard event files and to `metrics.jsonl` (one JSON object per write)."""

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
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter  # lazy: keeps `import mage_jax` light

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, stage: str, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        scalars = _scalars(metrics)
        for name, value in scalars.items():
            self._tb.add_scalar(f"{stage}/{name}", value, step)
        record = {"stage": stage, "step": int(step), "time": time.time(), **scalars}
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
