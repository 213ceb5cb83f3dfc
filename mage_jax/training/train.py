"""A run as a pipeline of stages, then its evaluation; `main.py --mode` picks a slice of it.

MAGE's pipeline is stage 1 (the autoencoder with its adapter and inverse dynamics), stage 2 (the
transformer on the frozen autoencoder's token maps) and, when it acts, stage 3 (the acting head on
generated plans); BC's is one stage. Each stage of the slice trains, resuming from its latest
checkpoint, and the earlier ones are restored. Everything a stage needs is built from the config and
the dataset, so re-running the same command continues the run. `load_policy` gives the tools that
read saved runs the policy exactly as `--mode=eval` scores it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from mage_jax.baselines import bc
from mage_jax.data.episodes import EpisodeArrays, episodes_from_minari
from mage_jax.data.normalization import NormStats, compute_norm_stats
from mage_jax.data.sampler import make_segment_data
from mage_jax.data.split import split_episodes
from mage_jax.datasets.registry import ensure_dataset
from mage_jax.evaluation.policy import make_plan_trajectory, make_policy
from mage_jax.models.autoencoder import make_autoencoder
from mage_jax.models.transformer import make_transformer
from mage_jax.progress import progress_bar
from mage_jax.training import seeds as seeds_lib
from mage_jax.training import sharding as sharding_lib
from mage_jax.training import validation
from mage_jax.training.checkpoints import StageCheckpointer, config_to_json
from mage_jax.training.head import (
    create_head_state,
    make_head_step,
    make_plan_buffer,
    sample_plan_buffer,
)
from mage_jax.training.loop import StageRun, run_stage
from mage_jax.training.metrics_writer import MetricsWriter
from mage_jax.training.stage1 import create_stage1_state, make_stage1_step
from mage_jax.training.stage2 import create_stage2_state, make_stage2_step

AUTOENCODER, TRANSFORMER, HEAD, BC = "autoencoder", "transformer", "head", "bc"
MODES = ("train", "train_autoencoder", "train_transformer", "train_head", "eval")
SECTIONS = {AUTOENCODER: "stage1", TRANSFORMER: "stage2", HEAD: "head", BC: "bc"}  # each stage's config
ALGORITHMS = ("mage", "bc")


@dataclasses.dataclass
class RunContext:
    """What every stage of one run shares."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: Any
    dataset: Any  # minari.MinariDataset
    episodes: EpisodeArrays  # the training episodes (the held-out ones are only in val_batch)
    stats: NormStats
    segment_data: Any  # SegmentData, replicated on the mesh
    val_batch: dict | None  # fixed held-out windows for validation metrics (None: nothing held out)
    meta: dict  # stored beside every checkpoint
    writer: MetricsWriter
    config_file: str | None = None  # where the run's config.json goes (None: nowhere)

    @property
    def state_dim(self) -> int:
        return int(self.episodes.observations.shape[-1])

    @property
    def action_dim(self) -> int:
        return int(self.episodes.actions.shape[-1])

    @functools.cached_property
    def ae_model(self):
        return make_autoencoder(self.config.model, self.state_dim, self.action_dim, self.config.data.horizon)

    @functools.cached_property
    def tf_model(self):
        return make_transformer(self.config.model, self.state_dim)

    @property
    def stacked(self) -> bool:
        """Several training seeds, stacked on a leading axis of every state (`seeds.py`)."""
        return seeds_lib.is_stacked(self.config)

    @property
    def seeds(self) -> tuple[int, ...] | None:
        """The training seeds of a stacked run (None for one seed)."""
        return tuple(seeds_lib.training_seeds(self.config)) if self.stacked else None

    def stage_keys(self, salt: int, split: bool = True):
        """A stage's (init key, train key) per seed (stacked when `stacked`), or with split=False its
        one key stream; the train key is placed on the mesh like the state."""
        keys = seeds_lib.stage_keys(self.config, salt)
        sharding = seeds_lib.state_sharding(self.mesh, self.stacked)
        if not split:
            return sharding_lib.global_array(jax.device_get(seeds_lib.stack(keys)), sharding)
        init_key, train_key = seeds_lib.split_keys(keys)
        return init_key, sharding_lib.global_array(jax.device_get(train_key), sharding)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> RunContext:
    """Mesh, dataset (generated or downloaded when missing), episode arrays, statistics, writer."""
    mesh = sharding_lib.make_data_mesh(seed_shards=int(config.train.seed_shards))
    for name in ("bc",) if config.algorithm == "bc" else ("stage1", "stage2", "head"):
        sharding_lib.check_batch_divisible(config[name].batch_size, mesh, f"{name}.batch_size")
    is_main = sharding_lib.is_main_process()
    dataset = _ensure_dataset_in_order(config.data)
    all_episodes = episodes_from_minari(dataset, config.data.obs_family,
                                        rtg_discount=config.data.rtg_discount,
                                        rtg_scale=config.data.rtg_scale,
                                        rtg_bootstrap=config.data.rtg_bootstrap)
    episodes, held_out = split_episodes(all_episodes, config.data.val_fraction, config.data.val_seed)
    stats = compute_norm_stats(episodes)
    segment_data = make_segment_data(episodes, stats, max_horizon=config.data.horizon,
                                     sharding=sharding_lib.replicated(mesh))
    val_batch = None
    if held_out is not None:
        val_data = make_segment_data(held_out, stats, max_horizon=config.data.horizon,
                                     sharding=sharding_lib.replicated(mesh))
        val_batch = validation.held_out_batch(val_data, config.data.val_windows, config.data.horizon,
                                              config.data.val_seed)
    undiscounted = all_episodes.rewards.sum(axis=1)
    meta = {
        "config": config_to_json(config),
        "dataset_id": config.data.dataset_id,
        "norm_stats": stats.to_dict(),
        "state_dim": int(episodes.observations.shape[-1]),
        "action_dim": int(episodes.actions.shape[-1]),
        "action_low": np.asarray(episodes.action_low).tolist(),
        "action_high": np.asarray(episodes.action_high).tolist(),
        "best_episode_return": float(undiscounted.max()),
        "num_episodes": int(len(episodes.lengths)),
        "num_steps": int(episodes.lengths.sum()),
        "num_val_episodes": 0 if held_out is None else held_out.num_episodes,
        "num_val_steps": 0 if held_out is None else held_out.num_steps,
    }
    logging.info("dataset %s: %d training episodes (%d steps), %d held out (%d steps), state %d-D, "
                 "action %d-D", config.data.dataset_id, meta["num_episodes"], meta["num_steps"],
                 meta["num_val_episodes"], meta["num_val_steps"], meta["state_dim"],
                 meta["action_dim"])
    return RunContext(config, workdir, mesh, dataset, episodes, stats, segment_data, val_batch, meta,
                      MetricsWriter(workdir, enabled=is_main),
                      os.path.join(workdir, "config.json") if is_main else None)


def _ensure_dataset_in_order(data_config: ml_collections.ConfigDict):
    """Process 0 generates or downloads a missing dataset first; the others then find it where they
    share its disk, and fetch their own copy where they do not (the hosts of a pod)."""
    if sharding_lib.is_main_process():
        dataset = ensure_dataset(data_config)
        sharding_lib.sync_processes("dataset ready")
        return dataset
    sharding_lib.sync_processes("dataset ready")
    return ensure_dataset(data_config)


def _stage_run(name: str, ctx: RunContext) -> StageRun:
    c = ctx.config
    stage = c[SECTIONS[name]]
    return StageRun(name=name, num_steps=stage.num_steps, batch_size=stage.batch_size,
                    horizon=c.data.horizon, steps_per_call=c.train.steps_per_call,
                    log_every=c.train.log_every, checkpoint_every=c.train.checkpoint_every,
                    val_every=c.train.val_every, scan_updates=c.train.scan_updates, seeds=ctx.seeds)


def _validation(ctx: RunContext, make):
    """`make(val_batch)` -> a validate(state) function, or None when nothing is held out."""
    return None if ctx.val_batch is None else make(ctx.val_batch)


def _init_or_restore(ctx: RunContext, checkpointer: StageCheckpointer, init_fn, init_arg, step=None):
    """Initialise the state (`init_fn(init_arg)`, per seed) directly on the mesh, then restore a
    checkpoint over it: this run's, or when it has none, the warm-start run's (`config.init.<stage>`),
    saved as this run's own first checkpoint."""
    state = jax.jit(seeds_lib.per_seed(init_fn, ctx.stacked),
                    out_shardings=seeds_lib.state_sharding(ctx.mesh, ctx.stacked))(init_arg)
    source = ctx.config.init.get(checkpointer.stage, "")
    if source and step is None and checkpointer.latest_step() is None:
        state, _ = StageCheckpointer(source, checkpointer.stage).restore(state, ctx.meta["config"])
        logging.info("%s: warm start from step %d of %s", checkpointer.stage,
                     seeds_lib.current_step(state), source)
        checkpointer.save(seeds_lib.current_step(state), state, ctx.meta)
        checkpointer.wait()
    elif step is not None or checkpointer.latest_step() is not None:
        state, _ = checkpointer.restore(state, ctx.meta["config"], step=step)
        logging.info("%s: restored step %d from %s", checkpointer.stage, seeds_lib.current_step(state),
                     checkpointer.directory)
    _record_config(ctx)
    return state


def _record_config(ctx: RunContext) -> None:
    """config.json, written once a stage's checkpoint has matched the config: a command with another
    model must not overwrite the record of the run it failed to resume."""
    if ctx.config_file:
        with open(ctx.config_file, "w") as f:
            f.write(ctx.config.to_json_best_effort(indent=2))


def autoencoder_state(ctx: RunContext, states: dict, train: bool, step: int | None = None,
                      on_call_end=None):
    """Stage 1: train the autoencoder (resuming), or with train=False restore the finished one."""
    c = ctx.config
    init_key, train_key = ctx.stage_keys(1)
    checkpointer = StageCheckpointer(ctx.workdir, AUTOENCODER, keep=c.train.keep_checkpoints)
    if not train and checkpointer.latest_step() is None and not c.init.autoencoder:
        raise FileNotFoundError(f"no autoencoder checkpoint in {checkpointer.directory}; run "
                                "--mode=train_autoencoder (or --mode=train) first")
    state = _init_or_restore(
        ctx, checkpointer, lambda k: create_stage1_state(c, k, ctx.state_dim, ctx.action_dim), init_key,
        step=step)
    if train:
        state = run_stage(_stage_run(AUTOENCODER, ctx), state, make_stage1_step(c), ctx.segment_data,
                          train_key, ctx.mesh, checkpointer, ctx.meta, ctx.writer, on_call_end=on_call_end,
                          validate=_validation(ctx, lambda b: validation.autoencoder_validation(
                              ctx.ae_model, b, ctx.stacked)))
    checkpointer.close()
    return state


def transformer_state(ctx: RunContext, states: dict, train: bool, step: int | None = None,
                      on_call_end=None):
    """Stage 2 on the frozen autoencoder (`states[AUTOENCODER]`): train (resuming) or restore."""
    c, ae_state = ctx.config, states[AUTOENCODER]
    init_key, train_key = ctx.stage_keys(2)
    checkpointer = StageCheckpointer(ctx.workdir, TRANSFORMER, keep=c.train.keep_checkpoints)
    if not train and checkpointer.latest_step() is None and not c.init.transformer:
        raise FileNotFoundError(f"no transformer checkpoint in {checkpointer.directory}; train first "
                                "(--mode=train or --mode=train_transformer)")
    state = _init_or_restore(ctx, checkpointer, lambda k: create_stage2_state(c, k, ctx.state_dim),
                             init_key, step=step)
    if train:
        def step_fn(state, batch, key, ae_params):  # the frozen autoencoder of the same seed
            return make_stage2_step(c, ctx.ae_model, ae_params)(state, batch, key)

        validate = _validation(ctx, lambda b: validation.transformer_validation(
            c, ctx.ae_model, ctx.tf_model, ae_state.params, b, ctx.stacked))
        state = run_stage(_stage_run(TRANSFORMER, ctx), state, step_fn, ctx.segment_data, train_key,
                          ctx.mesh, checkpointer, ctx.meta, ctx.writer, on_call_end=on_call_end,
                          validate=validate, frozen=ae_state.params)
    checkpointer.close()
    return state


def head_state(ctx: RunContext, states: dict, train: bool, step: int | None = None, on_call_end=None):
    """Stage 3, the acting head on generated plans (frozen autoencoder and transformer)."""
    c = ctx.config
    ae_params, tf_params = states[AUTOENCODER].params, states[TRANSFORMER].params
    train_key = ctx.stage_keys(4, split=False)
    checkpointer = StageCheckpointer(ctx.workdir, HEAD, keep=c.train.keep_checkpoints)
    if not train and checkpointer.latest_step() is None:
        raise FileNotFoundError(f"no acting-head checkpoint in {checkpointer.directory}; train it "
                                "(--mode=train or --mode=train_head), or act with stage 1's head "
                                "(--config.head.acts=False)")
    state = _init_or_restore(ctx, checkpointer, lambda ae: create_head_state(c, ae), ae_params, step=step)
    if train:
        def step_fn(state, batch, key, frozen):  # the frozen autoencoder and transformer of the seed
            return make_head_step(c, ctx.ae_model, ctx.tf_model, *frozen)(state, batch, key)

        validate = _validation(ctx, lambda b: validation.head_validation(
            c, ctx.ae_model, ctx.tf_model, ae_params, tf_params, b, ctx.stacked))
        run, data = _stage_run(HEAD, ctx), ctx.segment_data
        if c.head.plan_buffer > 0 and seeds_lib.current_step(state) < c.head.num_steps:
            data = _plan_buffer(ctx, ae_params, tf_params)
            run = dataclasses.replace(run, sample=sample_plan_buffer, data_per_seed=ctx.stacked)
        state = run_stage(run, state, step_fn, data, train_key, ctx.mesh, checkpointer, ctx.meta,
                          ctx.writer, on_call_end=on_call_end, validate=validate,
                          frozen=(ae_params, tf_params))
    checkpointer.close()
    return state


def _plan_buffer(ctx: RunContext, ae_params, tf_params):
    """Stage 3's buffered plans, sampled again on resume (the same key gives the same buffer)."""
    c = ctx.config
    size = int(c.head.plan_buffer)
    started = time.perf_counter()
    with progress_bar(size, "head plans", "plan", disable=not sharding_lib.is_main_process(),
                      unit_scale=True) as bar:
        buffer = make_plan_buffer(c, ctx.ae_model, ctx.tf_model, ae_params, tf_params, ctx.segment_data,
                                  seeds_lib.stack(seeds_lib.stage_keys(c, 5)),
                                  seeds_lib.state_sharding(ctx.mesh, ctx.stacked),
                                  progress=lambda done: bar.update(done - bar.n), stacked=ctx.stacked)
    logging.info("head: sampled %d plans for the acting head in %.1f s", size,
                 time.perf_counter() - started)
    return buffer


def bc_state(ctx: RunContext, states: dict, train: bool, step: int | None = None, on_call_end=None):
    """The behaviour-cloning baseline: one stage on the same data, budget `config.bc`."""
    c = ctx.config
    init_key, train_key = ctx.stage_keys(3)
    checkpointer = StageCheckpointer(ctx.workdir, BC, keep=c.train.keep_checkpoints)
    if not train and checkpointer.latest_step() is None:
        raise FileNotFoundError(f"no BC checkpoint in {checkpointer.directory}; train first")
    state = _init_or_restore(ctx, checkpointer,
                             lambda k: bc.create_bc_state(c, k, ctx.state_dim, ctx.action_dim),
                             init_key, step=step)
    if train:
        validate = _validation(ctx, lambda b: validation.bc_validation(
            bc.make_bc_model(c, ctx.action_dim), b, ctx.stacked))
        state = run_stage(_stage_run(BC, ctx), state, bc.make_bc_step(c, ctx.action_dim),
                          ctx.segment_data, train_key, ctx.mesh, checkpointer, ctx.meta, ctx.writer,
                          on_call_end=on_call_end, validate=validate)
    checkpointer.close()
    return state


# Each stage: (ctx, the earlier stages' states, train, step, on_call_end) -> its state.
STAGE_FUNCTIONS = {AUTOENCODER: autoencoder_state, TRANSFORMER: transformer_state, HEAD: head_state,
                   BC: bc_state}


def pipeline(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """A run's stages in order: BC's one, or MAGE's autoencoder, transformer and, when it acts, the
    stage-3 head (without it stage 1's inverse dynamics acts)."""
    if config.get("algorithm", "mage") == BC:
        return (BC,)
    return (AUTOENCODER, TRANSFORMER, HEAD) if config.head.acts else (AUTOENCODER, TRANSFORMER)


def scored_stage(config: ml_collections.ConfigDict) -> str:
    """The stage whose step a policy is scored at (and `--checkpoint_step` picks): BC's, or the
    transformer's (the head follows the transformer it was trained on)."""
    return BC if config.get("algorithm", "mage") == BC else TRANSFORMER


def run_stages(ctx: RunContext, stages, trained=(), step: int | None = None, hooks=None) -> dict:
    """Each of `stages` in order, trained (resuming) when in `trained` and restored otherwise:
    {stage: state}. `step` picks the scored stage's checkpoint; `hooks(stage, earlier_states)` may give
    a stage its `on_call_end`."""
    states = {}
    for name in stages:
        hook = hooks(name, dict(states)) if hooks and name in trained else None
        states[name] = STAGE_FUNCTIONS[name](ctx, states, train=name in trained,
                                             step=step if name == scored_stage(ctx.config) else None,
                                             on_call_end=hook)
    return states


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a run acts: `act(params, observations, returns_to_go, key)` (MAGE's or BC's, jitted), the
    parameters it reads, the step it is scored at, and MAGE's plan decoder for the plots."""

    act: Callable
    params: Any
    step: int
    plan: Callable | None = None


def acting_functions(ctx: RunContext) -> tuple[Callable, Callable | None]:
    """(act, plan) of the run's algorithm; plan is None for BC."""
    c, low, high = ctx.config, ctx.episodes.action_low, ctx.episodes.action_high
    if c.get("algorithm", "mage") == BC:
        return bc.make_bc_policy(c, ctx.action_dim, ctx.stats, low, high), None
    return (make_policy(c, ctx.ae_model, ctx.tf_model, ctx.stats, low, high),
            make_plan_trajectory(c, ctx.ae_model, ctx.tf_model, ctx.stats))


def acting_params(states: dict) -> Any:
    """The parameters `act` reads, from the stages' states: BC's, or {"autoencoder", "transformer",
    and "head" when stage 3 has trained} (without "head", stage 1's inverse dynamics acts)."""
    if BC in states:
        return states[BC].params
    params = {"autoencoder": states[AUTOENCODER].params, "transformer": states[TRANSFORMER].params}
    if HEAD in states:
        params["head"] = states[HEAD].params
    return params


def policy_of(ctx: RunContext, states: dict, functions=None) -> Policy:
    act, plan = functions or acting_functions(ctx)
    step = seeds_lib.current_step(states[scored_stage(ctx.config)])
    return Policy(act, acting_params(states), step, plan)


def load_policy(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                out_dir: str | None = None) -> tuple[RunContext, Policy, dict]:
    """A finished run's policy as `--mode=eval` scores it, for the tools that read saved runs:
    (context, policy, {stage: state}). Checkpoints are checked against `config`. What the context
    writes (config.json, metrics of later evaluations) goes to `out_dir`; without it, the run's own
    config.json is left as it is."""
    ctx = dataclasses.replace(prepare(config, out_dir or workdir), workdir=workdir)
    if out_dir is None:
        ctx = dataclasses.replace(ctx, config_file=None)
    states = run_stages(ctx, pipeline(config), step=step)
    return ctx, policy_of(ctx, states), states


def _periodic_evaluation(ctx: RunContext, stage: str, act: Callable, params_of,
                         final_step: int | None = None):
    """An `on_call_end` hook evaluating `stage` every `config.train.eval_every` steps (None when 0);
    `params_of(state)` gives the acting parameters at that point.

    `final_step`: the step the final evaluation will score with the same parameters right after this
    stage; it is not evaluated twice (on kitchen one evaluation takes about 100 s on 2 cores).
    """
    every = int(ctx.config.train.eval_every)
    if every <= 0:
        return None
    from mage_jax.evaluation.run import evaluate_run  # the env stack is only needed here

    def hook(previous: int, step: int, state) -> None:
        if step // every > previous // every and step != final_step:
            evaluate_run(ctx, act, params_of(state), step, final=False, stage=stage)

    return hook


def mode_stages(config: ml_collections.ConfigDict, mode: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The slice of the pipeline `mode` runs, (stages, trained): every stage for `train` (all
    trained) and `eval` (none), else the stages up to the one `train_<stage>` trains."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    stages = pipeline(config)
    if mode in ("train", "eval"):
        return stages, stages if mode == "train" else ()
    stage = mode.removeprefix("train_")
    if stage not in stages:
        raise ValueError(f"--mode={mode} trains the {stage}, which this config's pipeline "
                         f"{' -> '.join(stages)} does not have")
    return stages[:stages.index(stage) + 1], (stage,)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mode: str = "train",
                       checkpoint_step: int | None = None) -> dict | None:
    """Run `mode`'s slice of the pipeline, then evaluate when the mode does (`train`, `eval`);
    returns the evaluation results, or None."""
    algorithm = config.get("algorithm", "mage")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown config.algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    stages, trained = mode_stages(config, mode)
    ctx = prepare(config, workdir)
    try:
        functions = acting_functions(ctx)
        last = pipeline(config)[-1]

        def hooks(stage: str, earlier: dict):
            if stage == AUTOENCODER:  # nothing acts before the transformer
                return None
            final = config[SECTIONS[stage]].num_steps if mode == "train" and stage == last else None
            return _periodic_evaluation(ctx, stage, functions[0],
                                        lambda state: acting_params({**earlier, stage: state}), final)

        states = run_stages(ctx, stages, trained, step=checkpoint_step if mode == "eval" else None,
                            hooks=hooks)
        if mode not in ("train", "eval"):
            return None
        from mage_jax.evaluation.run import evaluate_run  # the env stack is only needed here

        policy = policy_of(ctx, states, functions)
        results = evaluate_run(ctx, policy.act, policy.params, policy.step, plan=policy.plan)
        logging.info("results: %s", json.dumps(results["headline"]))
        return results
    finally:
        ctx.writer.close()
