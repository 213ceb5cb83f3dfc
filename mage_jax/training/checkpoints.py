"""Orbax checkpoints of one training stage: the train state plus a JSON record of the run.

A checkpoint holds params, optimiser state and step (the state pytree) and, beside it, the resolved
config, the data-normalisation statistics and the data dimensions, so a checkpoint alone is enough to
act. Restoring into a run whose model/data config or array shapes differ fails with one message that
lists the differences instead of silently loading mismatched weights.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

# Config sections whose change makes an old checkpoint meaningless for the current run, and single
# fields (the number of stacked training seeds is the states' leading axis).
_MUST_MATCH = ("data", "model")
_MUST_MATCH_FIELDS = ("train.num_seeds",)
# The compute dtype changes no parameter: a float32 run resumes or evaluates in bfloat16 and back.
_MAY_DIFFER = {"data.download", "data.generator", "data.generator_kwargs", "model.dtype"}


class CheckpointMismatchError(ValueError):
    """A checkpoint does not belong to the current run (config or shapes differ), or is unreadable."""


def config_to_json(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


# Fields newer than some saved runs, with the value those runs had before the field existed.
_ADDED_LATER = {"data.rtg_bootstrap": False, "train.num_seeds": 1}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences of the sections that must match between two config dicts."""
    diffs = []
    for section in _MUST_MATCH:
        a = {k: v for k, v in _ADDED_LATER.items() if k.startswith(f"{section}.")}
        a.update(_flatten(saved.get(section, {}), f"{section}."))
        b = _flatten(current.get(section, {}), f"{section}.")
        for key in sorted(set(a) | set(b)):
            if any(key == m or key.startswith(m + ".") for m in _MAY_DIFFER):
                continue
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                diffs.append(f"{key}: checkpoint {a.get(key, '<absent>')!r}, "
                             f"this run {b.get(key, '<absent>')!r}")
    for key in _MUST_MATCH_FIELDS:
        ours = _flatten(current).get(key, _ADDED_LATER.get(key))
        theirs = _flatten(saved).get(key, _ADDED_LATER.get(key))
        if ours != theirs:
            diffs.append(f"{key}: checkpoint {theirs!r}, this run {ours!r}")
    return diffs


class StageCheckpointer:
    """Keeps the last `keep` checkpoints of one stage under `<workdir>/checkpoints/<stage>`."""

    def __init__(self, workdir: str, stage: str, keep: int = 3):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints", stage))
        self.stage = stage
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Asynchronous save; `wait()` (or `close()`) before the process exits."""
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises several types for missing/corrupt files
            raise self._unreadable(step, e) from e
        return restored.meta

    def restore(self, abstract_state: Any, current_config: dict, step: int | None = None,
                ) -> tuple[Any, dict]:
        """Restore the state (with the shardings of `abstract_state`) and the meta record."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointMismatchError(f"no {self.stage} checkpoint under {self.directory}")
        meta = self.read_meta(step)
        diffs = config_differences(meta.get("config", {}), current_config)
        if diffs:
            raise CheckpointMismatchError(
                f"the {self.stage} checkpoint at step {step} in {self.directory} was trained with a "
                "different config:\n  " + "\n  ".join(diffs) +
                "\nUse a fresh --workdir for the new config, or rerun with the checkpoint's config."
            )
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            abstract_state,
        )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as e:
            raise self._unreadable(step, e) from e
        _check_shapes(restored.state, target, self.directory, step)
        return restored.state, meta

    def _unreadable(self, step, error: Exception) -> CheckpointMismatchError:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return CheckpointMismatchError(
            f"cannot read the {self.stage} checkpoint at step {step} in {self.directory}: "
            f"{first_line}\nIt is corrupt or from an incompatible version: delete "
            f"{os.path.join(self.directory, str(step))} to fall back to an earlier checkpoint, or "
            "use a fresh --workdir."
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _check_shapes(restored: Any, target: Any, directory: str, step: int) -> None:
    bad = []
    for (path, r), t in zip(jax.tree_util.tree_leaves_with_path(restored),
                            jax.tree.leaves(target), strict=True):
        if r.shape != t.shape:
            bad.append(f"{jax.tree_util.keystr(path)}: checkpoint {r.shape}, this run {t.shape}")
    if bad:
        raise CheckpointMismatchError(
            f"checkpoint at step {step} in {directory} has arrays of other shapes than this run:\n  "
            + "\n  ".join(bad[:10]) + "\nUse a fresh --workdir for a different model.")
