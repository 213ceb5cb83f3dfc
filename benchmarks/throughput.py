"""Throughput benchmark: training steps/s, FLOP/s against the measured matmul rate, and acting latency.

For one config (an experiment file `path.py:variant`, or a size name `quicktest` | `cpu` | `default`,
which means the local PointMaze config at that size) it measures, each as the median over `--repeats`
timed calls after a warm-up call, with `block_until_ready`:

* the machine's matmul rate: a jitted 2048 x 2048 matmul in the model's compute dtype;
* stage 1 and stage 2 training: `steps_per_call` updates through the training loop's own
  `make_multi_step` (one `lax.scan` on accelerators, dispatched jitted updates on CPU), batches drawn
  by the on-device sampler, as steps/s, tokens/s (stage 1: batch x horizon; stage 2: batch x
  sum(scales)), FLOPs per step
  from XLA's cost analysis of one update (fallback 6 x params x tokens) and achieved FLOP/s;
* the policy's `act` at several batch sizes (each compiled once, its compile time recorded): ms
  per call, actions/s, the transformer sampler alone
  (`make_sampler`) against the whole `act`, and achieved actions/s against the actions/s the FLOP
  count allows at the matmul rate;
* a VAR-comparable sampling measurement (transformer at the `cpu` size, 52 tokens, CFG on) at batch 1
  and 64, next to the PyTorch VAR figures measured on this kind of machine, with its FLOP bound (the
  time its FLOPs take at the matmul rate) and so the largest speed-up over VAR the machine allows.

Random parameters and random batches of the right shapes: throughput does not depend on the values.
Runs unchanged on CPU, GPU and TPU. Example:

    python benchmarks/throughput.py --config cpu --repeats 5 --out benchmarks/throughput_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mage_jax import host_memory
from mage_jax.data import compute_norm_stats, episodes_from_lists, make_segment_data, sample_segments
from mage_jax.data.normalization import NormStats
from mage_jax.evaluation.policy import make_policy
from mage_jax.models.autoencoder import make_autoencoder
from mage_jax.models.sampling import make_sampler, sampling_options
from mage_jax.models.transformer import compute_dtype, init_transformer_params, make_transformer
from mage_jax.training import train
from mage_jax.training.loop import make_multi_step
from mage_jax.training.sharding import make_data_mesh, replicated
from mage_jax.training.stage1 import create_stage1_state, make_stage1_step
from mage_jax.training.stage2 import create_stage2_state, make_stage2_step

REPO = Path(__file__).resolve().parents[1]
SIZES = ("quicktest", "cpu", "default")
# VAR's PyTorch transformer at our `cpu` size (depth 4, width 128, 4 heads, vocab 256, 55 tokens),
# batch 64, 2 threads, measured by a peer on this kind of 2-core machine.
VAR_PEER = {"train_step_ms": 230.0, "train_tokens_per_s": 15.3e3,
            "sample_cfg_ms_batch1": 18.3, "sample_cfg_ms_batch64": 204.0}
PAPER_MS_PER_ACTION = 27.3  # MAGE paper, Adroit


# ----- config ----------------------------------------------------------------------------------
def load_config(spec: str) -> ml_collections.ConfigDict:
    """`path/to/file.py:variant` -> that file's get_config(variant); a size name -> local PointMaze."""
    if spec in SIZES:
        spec = "experiments/pointmaze.py:local" + ("" if spec == "default" else f",{spec}")
    path, _, arg = spec.partition(":")
    file = Path(path) if Path(path).is_file() else REPO / path
    if not file.is_file():
        raise SystemExit(f"--config {spec!r}: no config file {path!r}; give 'experiments/<file>.py:"
                         f"<variant>' or one of {SIZES}")
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


# ----- timing helpers --------------------------------------------------------------------------
def median_seconds(fn, repeats: int, min_total_s: float = 0.0) -> float:
    """Median wall time of fn() (which must block) after one warm-up call; at least `repeats` calls,
    more until `min_total_s` seconds have been spent (cheap calls get many samples)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_total_s and len(times) < 10_000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compiled_flops(jitted, *args) -> float | None:
    """XLA's FLOP count of one call (None when the backend reports none)."""
    return flops_of(jitted.lower(*args).compile())


def compile_once(jitted, *args):
    """(compiled program, its FLOP count, seconds to trace and compile): time and count one program,
    since each compilation costs 20-45 s on a GPU."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, flops_of(compiled), time.perf_counter() - start


def flops_of(compiled) -> float | None:
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        return None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def param_count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def matmul_rate(dtype: str, repeats: int, n: int = 2048) -> float:
    """Measured FLOP/s of a jitted n x n matmul in `dtype` (the machine's practical peak)."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    seconds = median_seconds(lambda: matmul(a, b).block_until_ready(), repeats, min_total_s=1.0)
    return 2.0 * n ** 3 / seconds


# ----- training ---------------------------------------------------------------------------------
def random_segment_data(horizon: int, state_dim: int, action_dim: int, episodes: int = 64,
                        length: int = 300):
    """Random episodes on device, so training is timed through the real on-device sampler."""
    rng = np.random.default_rng(0)
    eps = episodes_from_lists([rng.normal(size=(length, state_dim)) for _ in range(episodes)],
                              [rng.uniform(-1, 1, size=(length, action_dim)) for _ in range(episodes)],
                              [rng.normal(size=length) for _ in range(episodes)])
    return make_segment_data(eps, compute_norm_stats(eps), max_horizon=horizon)


def time_training(name: str, state, step_fn, data, batch_size: int, horizon: int, tokens_per_step: int,
                  steps_per_call: int, repeats: int, peak: float) -> dict:
    """The training loop's own multi-step call (scan on accelerators, dispatched updates on CPU)."""
    key = jax.random.PRNGKey(1)
    batch = sample_segments(data, key, batch_size, horizon)
    # FLOPs of a single update (XLA counts a while-loop body once, so not from a scanned program).
    flops = compiled_flops(jax.jit(step_fn), state, batch, key)
    flops_source = "xla_cost_analysis"
    if flops is None:
        flops, flops_source = 6.0 * param_count(state.params) * tokens_per_step, "6*params*tokens"
    mesh = make_data_mesh()
    state = jax.device_put(state, replicated(mesh))
    multi = make_multi_step(step_fn, batch_size, horizon, steps_per_call, mesh,
                            jax.tree.map(lambda x: x.sharding, state))
    holder = {"state": state}

    def call():
        holder["state"], metrics = multi(holder["state"], data, key)
        jax.block_until_ready(metrics)

    seconds = median_seconds(call, repeats) / steps_per_call
    return {"stage": name, "params": param_count(state.params), "steps_per_call": steps_per_call,
            "ms_per_step": 1e3 * seconds, "steps_per_s": 1.0 / seconds,
            "tokens_per_step": tokens_per_step, "tokens_per_s": tokens_per_step / seconds,
            "flops_per_step": flops, "flops_source": flops_source,
            "achieved_flops_per_s": flops / seconds, "fraction_of_matmul_rate": flops / seconds / peak}


# ----- acting -----------------------------------------------------------------------------------
def random_states(config, state_dim: int, action_dim: int):
    """Freshly initialised stage-1 and stage-2 training states of the config's shapes."""
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    return (create_stage1_state(config, key1, state_dim, action_dim),
            create_stage2_state(config, key2, state_dim))


def random_policy(config, ae_model, tf_model, state_dim: int, action_dim: int):
    """The policy's `act` with identity normalisation and actions in [-1, 1]."""
    stats = NormStats(np.zeros(state_dim), np.ones(state_dim))
    return make_policy(config, ae_model, tf_model, stats, -np.ones(action_dim), np.ones(action_dim))


def time_acting(config, ae_model, tf_model, params, state_dim: int, action_dim: int,
                batches: list[int], repeats: int, peak: float, min_total_s: float) -> list[dict]:
    act = random_policy(config, ae_model, tf_model, state_dim, action_dim)
    sampler = make_sampler(tf_model, ae_model, **sampling_options(config.sampling))
    rows = []
    for batch in batches:
        observations = jax.random.normal(jax.random.PRNGKey(batch), (batch, state_dim))
        returns = jnp.ones((batch,))
        cond = jnp.concatenate([returns[:, None], observations], axis=-1)
        key = jax.random.PRNGKey(2)
        act_b, flops, compile_s = compile_once(act, params, observations, returns, key)
        sampler_b = compile_once(sampler, params["transformer"], params["autoencoder"], cond, key)[0]
        act_s = median_seconds(
            lambda f=act_b, o=observations, r=returns, k=key: f(params, o, r, k).block_until_ready(),
            repeats, min_total_s)
        sample_s = median_seconds(lambda f=sampler_b, c=cond, k=key: jax.block_until_ready(
            f(params["transformer"], params["autoencoder"], c, k)), repeats, min_total_s)
        row = {"batch": batch, "act_ms": 1e3 * act_s, "actions_per_s": batch / act_s,
               "sampler_ms": 1e3 * sample_s, "rest_ms": 1e3 * (act_s - sample_s),
               "sampler_share": sample_s / act_s, "act_flops": flops, "act_compile_s": compile_s}
        if flops:
            allowed = peak / (flops / batch)  # actions/s if act ran at the matmul rate
            row.update(flops_per_action=flops / batch, achieved_flops_per_s=flops / act_s,
                       actions_per_s_at_matmul_rate=allowed, fraction_of_flop_bound=(batch / act_s) / allowed)
        rows.append(row)
    return rows


def time_var_comparable(batches: list[int], top_k: int, cfg_scale: float, repeats: int,
                        min_total_s: float, peak: float) -> list[dict]:
    """The `cpu`-size transformer (52 tokens) sampling with KV cache and CFG, as VAR's peer figures.

    Also the FLOP bound: the time the call's FLOPs take at the measured matmul rate, and so the
    largest speed-up over VAR this machine allows (a target above it cannot be met here).
    """
    base = load_config("experiments/pointmaze.py:local,cpu")
    config = ml_collections.ConfigDict(base.to_dict())
    config.data.horizon = 64
    config.model.scales = (1, 2, 3, 4, 6, 8, 12, 16)
    state_dim, action_dim = 6, 2
    ae_model = make_autoencoder(config.model, state_dim, action_dim, config.data.horizon)
    tf_model = make_transformer(config.model, state_dim)
    ae_params = jax.jit(ae_model.init)(jax.random.PRNGKey(0),
                                       jnp.zeros((1, config.data.horizon, 1 + state_dim)))
    tf_params = init_transformer_params(tf_model, jax.random.PRNGKey(1))
    sampler = make_sampler(tf_model, ae_model, cfg_scale=cfg_scale, top_k=top_k)
    rows = []
    for batch in batches:
        cond = jax.random.normal(jax.random.PRNGKey(batch), (batch, 1 + state_dim))
        key = jax.random.PRNGKey(3)
        sampler_b, flops, _ = compile_once(sampler, tf_params, ae_params, cond, key)
        seconds = median_seconds(lambda f=sampler_b, c=cond, k=key: jax.block_until_ready(
            f(tf_params, ae_params, c, k)), repeats, min_total_s)
        peer = VAR_PEER.get(f"sample_cfg_ms_batch{batch}")
        row = {"batch": batch, "tokens": tf_model.seq_len, "top_k": top_k, "cfg_scale": cfg_scale,
               "ms": 1e3 * seconds, "var_peer_ms": peer,
               "speedup_vs_var": (peer / (1e3 * seconds)) if peer else None}
        if flops:
            bound_ms = 1e3 * flops / peak
            row.update(flops=flops, flop_bound_ms=bound_ms, fraction_of_flop_bound=bound_ms / row["ms"],
                       max_speedup_vs_var=(peer / bound_ms) if peer else None)
        rows.append(row)
    return rows


# ----- main -------------------------------------------------------------------------------------
def machine_info() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "jax": jax.__version__,
            "loadavg_at_start": list(load) if load else None,
            "malloc": host_memory.active_allocator()}


def run(args) -> dict:
    config = load_config(args.config)
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
    state_dim, action_dim = args.state_dim, args.action_dim
    horizon = int(config.data.horizon)
    dtype = str(compute_dtype(config.model.get("dtype", "auto")))
    out = {"config": args.config, "machine": machine_info(), "model_dtype": dtype}
    print(f"config {args.config}: horizon {horizon}, scales {tuple(config.model.scales)}, "
          f"backend {out['machine']['backend']}, malloc {out['machine']['malloc']}, "
          f"load {out['machine']['loadavg_at_start']}", flush=True)
    if hint := host_memory.slow_allocator_hint(out["machine"]["backend"]):
        print(f"warning: {hint}", flush=True)

    peak = matmul_rate(dtype, args.repeats)
    out["matmul_flops_per_s"] = peak
    print(f"matmul 2048^2 {dtype}: {peak / 1e9:.1f} GFLOP/s", flush=True)

    stage1_state, stage2_state = random_states(config, state_dim, action_dim)
    ae_model = make_autoencoder(config.model, state_dim, action_dim, horizon)
    ae_params = stage1_state.params
    tf_model = make_transformer(config.model, state_dim)
    params = train.acting_params({train.AUTOENCODER: stage1_state, train.TRANSFORMER: stage2_state})
    out["params"] = {"autoencoder": param_count(ae_params), "transformer": param_count(params["transformer"])}

    training = []
    if not args.skip_training:
        steps = args.steps_per_call or int(config.train.steps_per_call)
        data = random_segment_data(horizon, state_dim, action_dim)
        for name, stage, state, step_fn, tokens in (
                ("stage1", config.stage1, stage1_state, make_stage1_step(config), None),
                ("stage2", config.stage2, stage2_state, make_stage2_step(config, ae_model, ae_params),
                 None)):
            batch_size = args.batch_size or int(stage.batch_size)
            tokens = batch_size * (horizon if name == "stage1" else tf_model.seq_len)
            # Copy: the training call donates the state it is given.
            state = jax.tree.map(jnp.array, state)
            row = time_training(name, state, step_fn, data, batch_size, horizon, tokens, steps,
                                args.repeats, peak)
            row["batch_size"] = batch_size
            training.append(row)
            print(f"{name}: {row['ms_per_step']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
                  f"{row['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s "
                  f"({100 * row['fraction_of_matmul_rate']:.0f}% of matmul)", flush=True)
    out["training"] = training

    batches = [int(b) for b in args.act_batches.split(",") if b]
    out["acting"] = time_acting(config, ae_model, tf_model, params, state_dim, action_dim, batches,
                                args.repeats, peak, args.min_time)
    out["sampling_options"] = sampling_options(config.sampling)
    if args.var_compare:
        out["var_comparable_sampling"] = time_var_comparable(
            [1, 64], args.var_top_k, args.var_cfg_scale, args.repeats, args.min_time, peak)
    out["targets"] = check_targets(out, args.config)
    return out


def size_of(spec: str) -> str:
    """'quicktest' | 'cpu' | 'default' from a --config value (the last variant word that names a size)."""
    if spec in SIZES:
        return spec
    words = [w.strip() for w in spec.partition(":")[2].split(",")]
    return next((w for w in reversed(words) if w in SIZES), "default")


def check_targets(out: dict, spec: str) -> dict:
    """The project's targets that apply to this config (True = met)."""
    targets = {}
    spec = size_of(spec)
    stage2 = next((r for r in out["training"] if r["stage"] == "stage2"), None)
    if stage2 and spec == "cpu":
        needed = 1.2 * VAR_PEER["train_tokens_per_s"]
        targets["train_tokens_per_s_>=_1.2x_VAR"] = stage2["tokens_per_s"] >= needed
        targets["train_>=_60%_of_matmul_rate"] = stage2["fraction_of_matmul_rate"] >= 0.6
    for row in out.get("var_comparable_sampling", []):
        need = 6.0 if row["batch"] == 1 else 2.0
        if row["speedup_vs_var"] is not None:
            targets[f"var_sampling_batch{row['batch']}_>=_{need:g}x"] = row["speedup_vs_var"] >= need
    if spec == "default":
        for row in out["acting"]:
            if row["batch"] == 1:
                targets["act_batch1_<_27.3ms"] = row["act_ms"] < PAPER_MS_PER_ACTION
            if row["batch"] == 256 and row.get("fraction_of_flop_bound") is not None:
                targets["act_batch256_>=_half_flop_bound"] = row["fraction_of_flop_bound"] >= 0.5
    return targets


def print_table(out: dict) -> None:
    print(f"\n== {out['config']} on {out['machine']['device_kind']} ({out['machine']['backend']}), "
          f"matmul {out['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, params {out['params']}")
    if out["training"]:
        print(f"{'stage':8} {'batch':>6} {'ms/step':>9} {'steps/s':>8} {'tokens/s':>10} "
              f"{'GFLOP/step':>11} {'GFLOP/s':>8} {'%matmul':>8}")
        for r in out["training"]:
            print(f"{r['stage']:8} {r['batch_size']:6d} {r['ms_per_step']:9.1f} {r['steps_per_s']:8.2f} "
                  f"{r['tokens_per_s']:10.0f} {r['flops_per_step'] / 1e9:11.2f} "
                  f"{r['achieved_flops_per_s'] / 1e9:8.1f} {100 * r['fraction_of_matmul_rate']:7.0f}%")
    print(f"{'act batch':>9} {'ms/call':>9} {'actions/s':>10} {'sampler ms':>11} {'rest ms':>8} "
          f"{'MFLOP/act':>10} {'GFLOP/s':>8} {'%flop bound':>11}")
    for r in out["acting"]:
        fpa = r.get("flops_per_action")
        print(f"{r['batch']:9d} {r['act_ms']:9.2f} {r['actions_per_s']:10.0f} {r['sampler_ms']:11.2f} "
              f"{r['rest_ms']:8.2f} {fpa / 1e6 if fpa else float('nan'):10.2f} "
              f"{r.get('achieved_flops_per_s', float('nan')) / 1e9:8.2f} "
              f"{100 * r.get('fraction_of_flop_bound', float('nan')):10.1f}%")
    for r in out.get("var_comparable_sampling", []):
        print(f"VAR-comparable sampling (cpu transformer, {r['tokens']} tokens, cfg {r['cfg_scale']}, "
              f"top_k {r['top_k']}) batch {r['batch']}: {r['ms']:.2f} ms vs VAR {r['var_peer_ms']} ms "
              f"-> {r['speedup_vs_var']:.1f}x", end="")
        if "flop_bound_ms" in r:
            print(f"; FLOP bound {r['flop_bound_ms']:.2f} ms ({100 * r['fraction_of_flop_bound']:.0f}% "
                  f"reached), so at most {r['max_speedup_vs_var']:.1f}x VAR on this machine", end="")
        print()
    for name, ok in out["targets"].items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu",
                        help="experiment config 'experiments/<file>.py:<variant>' or a size name "
                             f"{SIZES} (= local PointMaze at that size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--min_time", type=float, default=1.0,
                        help="keep timing an act/sampler measurement until this many seconds")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--state_dim", type=int, default=6, help="state size (pointmaze: 4 obs + 2 goal)")
    parser.add_argument("--action_dim", type=int, default=2, help="action size")
    parser.add_argument("--steps_per_call", type=int, default=0,
                        help="updates per scanned training call (0 = config.train.steps_per_call)")
    parser.add_argument("--batch_size", type=int, default=0, help="training batch (0 = the config's)")
    parser.add_argument("--act_batches", default="1,16,64,256", help="comma-separated act batch sizes")
    parser.add_argument("--skip_training", action="store_true", help="only measure acting")
    parser.add_argument("--var_compare", action="store_true",
                        help="also time the VAR-comparable sampler (cpu-size transformer, CFG on)")
    parser.add_argument("--var_top_k", type=int, default=0, help="top-k of the VAR-comparable sampler")
    parser.add_argument("--var_cfg_scale", type=float, default=1.5, help="CFG strength of the same")
    args = parser.parse_args(argv)
    out = run(args)
    print_table(out)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
