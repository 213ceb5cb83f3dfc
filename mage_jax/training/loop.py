"""The training loop shared by both stages: scanned jitted updates, logging, checkpoints, preemption.

A stage is a pure `step_fn(state, batch, key) -> (state, metrics)`. The loop runs
`steps_per_call` of them per call (one `lax.scan`, or on CPU by default the same jitted update
dispatched that many times: `train.scan_updates`), each sampling its own batch on device, so the host
reads back a handful of scalars once per `steps_per_call` updates. Every program is compiled once per
stage (the scan: once per call size, i.e. the full calls and at most one shorter tail).
Randomness is `fold_in(stage_key, step)`, so a resumed run draws exactly the batches and noise an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from mage_jax.data.sampler import sample_segments
from mage_jax.progress import progress_bar
from mage_jax.training import seeds
from mage_jax.training import sharding as sharding_lib
from mage_jax.training.checkpoints import StageCheckpointer
from mage_jax.training.metrics_writer import MetricsWriter

StepFn = Callable[[Any, dict, jax.Array], tuple[Any, dict]]


class Preempted(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM arrived; the latest state was checkpointed and the run can be resumed."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


SCAN_MODES = ("auto", "always", "never")  # train.scan_updates; auto = scan except on CPU


def scans_updates(scan_updates: str) -> bool:
    """Whether `train.scan_updates` runs each call's updates as one `lax.scan` on this backend."""
    if scan_updates not in SCAN_MODES:
        raise ValueError(f"scan_updates={scan_updates!r} must be one of: " + ", ".join(SCAN_MODES))
    return scan_updates == "always" or (scan_updates == "auto" and jax.default_backend() != "cpu")


@dataclasses.dataclass(frozen=True)
class StageRun:
    """What the loop needs to know about one stage."""

    name: str  # 'autoencoder' or 'transformer'; the checkpoint folder and metric prefix
    num_steps: int
    batch_size: int
    horizon: int
    steps_per_call: int
    log_every: int
    checkpoint_every: int
    val_every: int = 0  # steps between validations (0 = only at the end of the stage)
    loss_keys: tuple[str, ...] = ("loss",)  # metrics that must stay finite
    scan_updates: str = "auto"  # 'auto' | 'always' | 'never': see `make_multi_step`
    # (data, key, batch_size, horizon) -> batch, jit-able: training windows, or buffered plans (stage 3)
    sample: Callable[..., dict] = sample_segments
    # Training seeds of a stacked state (`seeds.py`; None: one unstacked seed); whether the data is
    # per seed too (stage 3's plan buffers)
    seeds: tuple[int, ...] | None = None
    data_per_seed: bool = False


def _multi_step_programs(step_fn: StepFn, batch_size: int, horizon: int, mesh, state_sharding,
                         scan: bool, sample: Callable[..., dict] = sample_segments,
                         stacked: bool = False, data_per_seed: bool = False,
                         unroll_seeds: bool = False) -> Callable[[int], Callable]:
    """`programs(n)` -> the callable `(state, data, stage_key, frozen) -> (state, metrics)` running n
    updates; built (and compiled) once per n.

    Scanned: one jitted `lax.scan` per call size (the full calls and at most one shorter tail).
    Dispatched: a single jitted update shared by every call size, so the tail compiles nothing new.
    `stacked`: the state, stage key and frozen inputs carry a leading seed axis (`seeds.py`), and so
    does the data when `data_per_seed`; each update is vmapped over it (`unroll_seeds`: one copy of
    the update per seed, see `seeds.per_seed`).
    """
    batch_sharding = sharding_lib.batch_sharded(mesh)
    replicated = sharding_lib.replicated(mesh)
    # None: the data, keys and frozen inputs keep the shardings they were placed with.
    jit = functools.partial(jax.jit, in_shardings=(state_sharding, None, None, None),
                            out_shardings=(state_sharding, replicated), donate_argnums=0)

    def update(state, data, stage_key, frozen):
        step_key = jax.random.fold_in(stage_key, state.step)
        data_key, update_key = jax.random.split(step_key)
        batch = sample(data, data_key, batch_size, horizon)
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return step_fn(state, batch, update_key, *(() if frozen is None else (frozen,)))

    update = seeds.per_seed(update, stacked, in_axes=(0, 0 if data_per_seed else None, 0, 0),
                            unroll=unroll_seeds)

    if scan:
        @functools.cache
        def scanned(num_updates: int) -> Callable:
            def scanned_updates(state, data, stage_key, frozen):
                # Pure device code: nothing in the scan body calls back to or waits for the host.
                return jax.lax.scan(lambda s, _: update(s, data, stage_key, frozen), state, None,
                                    length=num_updates)

            return jit(scanned_updates)

        return scanned

    jitted_update = jit(update)

    @functools.cache
    def dispatched(num_updates: int) -> Callable:
        def run(state, data, stage_key, frozen):
            metrics = []
            for _ in range(num_updates):
                state, m = jitted_update(state, data, stage_key, frozen)
                metrics.append(m)
            # Stacked on the host: eager `jnp.stack` would compile a concatenate per call size.
            # The caller reads the metrics right away, so this waits no longer than it would.
            metrics = jax.device_get(metrics)
            return state, jax.tree.map(lambda *xs: np.stack(xs), *metrics)

        return run

    return dispatched


def make_multi_step(step_fn: StepFn, batch_size: int, horizon: int, num_updates: int, mesh,
                    state_sharding, scan_updates: str = "auto", stacked: bool = False,
                    unroll_seeds: bool = False) -> Callable:
    """`num_updates` updates (each sampling its own batch on device) per call, state donated:
    `(state, data, stage_key, frozen=None) -> (state, metrics)` (`frozen`: see `run_stage`;
    `stacked`: a state, key and frozen inputs of several training seeds, see `seeds.py`).

    Returns `(state, metrics)` with every metric stacked over the updates, shape (num_updates, ...).
    `scan_updates` (config `train.scan_updates`) picks how the updates run:

    * scanned ('always', and 'auto' off CPU): one jit of a `lax.scan`, so the host dispatches one
      program per call and does not touch the updates in between;
    * dispatched ('never', and 'auto' on CPU): the same jitted update called `num_updates` times.
      XLA:CPU runs while-loop bodies without its fast paths (measured: the stage-1 step 10x slower
      inside a scan). Dispatch is asynchronous, so the host still only waits once per call, when it
      reads the metrics (returned as numpy arrays).

    Both give the same updates: randomness is `fold_in(stage_key, step)` either way.
    """
    program = _multi_step_programs(step_fn, batch_size, horizon, mesh, state_sharding,
                                   scans_updates(scan_updates), stacked=stacked,
                                   unroll_seeds=unroll_seeds)(num_updates)

    def multi_step(state, data, stage_key, frozen=None):
        return program(state, data, stage_key, frozen)

    if hasattr(program, "lower"):  # the scanned program, for inspecting what it compiles to
        multi_step.lower = lambda state, data, stage_key, frozen=None: program.lower(
            state, data, stage_key, frozen)
    return multi_step


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop polls between calls (main thread only)."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def _first_non_finite(metrics: dict, keys: tuple[str, ...]) -> tuple[int, str] | None:
    for key in keys:
        values = np.asarray(metrics[key]).reshape(len(np.asarray(metrics[key])), -1)
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            return int(np.argmax(bad)), key
    return None


def run_stage(run: StageRun, state, step_fn: StepFn, data, stage_key: jax.Array, mesh,
              checkpointer: StageCheckpointer, meta: dict, writer: MetricsWriter,
              on_call_end: Callable[[int, int, Any], None] | None = None,
              validate: Callable[[Any], dict] | None = None, frozen: Any = None):
    """Train `state` from its current step to `run.num_steps`; returns the final state.

    `frozen`: parameters the stage reads but does not train (per seed, like the state); when given,
    the update calls `step_fn(state, batch, key, frozen)`.
    `validate(state.params) -> {name: float}` (held-out metrics; per seed when stacked) runs every
    `run.val_every` steps and at the end; its values go to the metrics log as stage `<name>_val`.
    `on_call_end(step before the call, step after it, state)` runs after every call of updates.

    Raises `Preempted` after checkpointing when SIGTERM arrives, and `NonFiniteLossError` (without
    checkpointing the bad state) when a loss stops being finite.
    """
    start = seeds.current_step(state)
    if start >= run.num_steps:
        logging.info("%s: already at step %d of %d, nothing to train", run.name, start, run.num_steps)
        return state
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    programs = _multi_step_programs(step_fn, run.batch_size, run.horizon, mesh, state_sharding,
                                    scans_updates(run.scan_updates), run.sample,
                                    stacked=run.seeds is not None, data_per_seed=run.data_per_seed,
                                    unroll_seeds=seeds.unrolls_stage(run.name))
    pending: list[dict] = []
    step = start
    show_progress = sharding_lib.is_main_process()
    with _SigtermFlag() as sigterm, progress_bar(run.num_steps, run.name, "step", initial=start,
                                                 disable=not show_progress, dynamic_ncols=True) as bar:
        while step < run.num_steps:
            n = min(run.steps_per_call, run.num_steps - step)
            state, metrics = programs(n)(state, data, stage_key, frozen)
            metrics = jax.device_get(metrics)  # (n, ...) per update; a few scalars
            bad = _first_non_finite(metrics, run.loss_keys)
            if bad is not None:
                index, key = bad
                checkpointer.wait()
                raise NonFiniteLossError(
                    f"{run.name}: metric {key!r} became non-finite at step {step + index + 1}; "
                    f"the last good checkpoint ({checkpointer.latest_step()}) is kept in "
                    f"{checkpointer.directory}. Lower the learning rate or check the data.")
            previous, step = step, step + n
            pending.append(metrics)
            bar.update(n)
            bar.set_postfix(loss=f"{float(np.mean(metrics[run.loss_keys[0]])):.4g}")  # over seeds too
            if step // run.log_every > previous // run.log_every or step == run.num_steps:
                merged = jax.tree.map(lambda *xs: np.concatenate(xs).mean(axis=0), *pending)
                writer.write(run.name, step, merged, seeds=run.seeds)
                pending = []
            done = step == run.num_steps
            # Every process stops at the same step when any of them got SIGTERM (each must save).
            stopping = sharding_lib.any_process(sigterm.received)
            if done or stopping or (
                    step // run.checkpoint_every > previous // run.checkpoint_every):
                checkpointer.save(step, state, meta)
                checkpointer.wait()  # the next call donates `state`; its buffers must be copied
            if validate is not None and (done or (run.val_every > 0 and
                                                  step // run.val_every > previous // run.val_every)):
                values = validate(state.params)
                writer.write(f"{run.name}_val", step, values, seeds=run.seeds)
                logging.info("%s validation at step %d%s: %s", run.name, step,
                             "" if run.seeds is None else " (mean over seeds)",
                             ", ".join(f"{k} {np.mean(v):.4g}" for k, v in values.items()))
            if stopping:
                writer.flush()
                raise Preempted(f"{run.name}: SIGTERM at step {step}; checkpoint saved in "
                                f"{checkpointer.directory}. Re-run the same command to resume.")
            if on_call_end is not None:
                on_call_end(previous, step, state)
    writer.flush()
    return state
