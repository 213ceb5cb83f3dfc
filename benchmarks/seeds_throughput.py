"""Training seeds per program (`train.num_seeds` = N): seed-updates/s of stages 1 and 2 and `act`.

For each N it builds N stacked random train states and times the training loop's own multi-step call
(`make_multi_step(..., stacked=True)`; N = 1: today's unstacked program) as the median of --repeats
timed calls after a warm-up call, and the policy's `act` vmapped over N stacked parameter sets at
N x --envs rows (`shard_policy(..., num_stacked=N)`), as in evaluation. Reported: seed-updates/s
(N x updates/s), the ratio to N = 1's per-seed throughput, and the compile time of the first call (one
compilation for N seeds, against N compilations for N runs).

    python benchmarks/seeds_throughput.py --config=cpu --num_seeds=1,2,4,8 --out=benchmarks/seeds_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from throughput import load_config, machine_info, random_policy, random_segment_data

from mage_jax.evaluation.sharded import shard_policy
from mage_jax.models.autoencoder import make_autoencoder
from mage_jax.models.transformer import make_transformer
from mage_jax.training import seeds
from mage_jax.training.loop import make_multi_step
from mage_jax.training.sharding import global_array, make_data_mesh
from mage_jax.training.stage1 import create_stage1_state, make_stage1_step
from mage_jax.training.stage2 import create_stage2_state, make_stage2_step

AS_TRAINED = {"stage1": "autoencoder", "stage2": "transformer"}  # the loop's stage names


def stacked_states(config, num_seeds: int, state_dim: int, action_dim: int, mesh):
    """N random stage-1 and stage-2 states, stacked (N = 1: unstacked), on the mesh."""
    stacked = num_seeds > 1
    keys = seeds.stack([jax.random.PRNGKey(i) for i in range(num_seeds)])
    sharding = seeds.state_sharding(mesh, stacked)

    def init(key):
        k1, k2 = jax.random.split(key)
        return (create_stage1_state(config, k1, state_dim, action_dim),
                create_stage2_state(config, k2, state_dim))

    return jax.jit(lambda: seeds.per_seed(init, stacked)(keys), out_shardings=sharding)()


def timed_calls(call, repeats: int) -> tuple[float, float]:
    """(first call's seconds, including compilation; median seconds of the next `repeats`)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def time_stage(name, step_fn, state, frozen, data, batch_size, horizon, steps, repeats, mesh,
               num_seeds) -> dict:
    stacked = num_seeds > 1
    sharding = seeds.state_sharding(mesh, stacked)
    multi = make_multi_step(step_fn, batch_size, horizon, steps, mesh,
                            jax.tree.map(lambda _: sharding, state), stacked=stacked,
                            unroll_seeds=seeds.unrolls_stage(AS_TRAINED[name]))
    key = global_array(np.asarray(seeds.stack([jax.random.PRNGKey(9 + i) for i in range(num_seeds)])),
                       sharding)
    holder = {"state": state}

    def call():
        holder["state"], metrics = multi(holder["state"], data, key, frozen)
        jax.block_until_ready(metrics)

    first, seconds = timed_calls(call, repeats)
    return {"stage": name, "num_seeds": num_seeds, "batch_size": batch_size,
            "updates_per_s": steps / seconds, "seed_updates_per_s": num_seeds * steps / seconds,
            "first_call_s": first}


def time_act(config, ae_model, tf_model, params, num_seeds, envs, state_dim, action_dim, repeats,
             mesh) -> dict:
    act = random_policy(config, ae_model, tf_model, state_dim, action_dim)
    policy = shard_policy(act, params, mesh, num_seeds if num_seeds > 1 else 0)
    rows = num_seeds * envs
    observations = np.random.default_rng(0).normal(size=(rows, state_dim)).astype(np.float32)
    returns = np.ones((rows,), np.float32)
    first, seconds = timed_calls(lambda: policy(observations, returns, jax.random.PRNGKey(0)), repeats)
    return {"stage": "act", "num_seeds": num_seeds, "rows": rows, "ms_per_call": 1e3 * seconds,
            "seed_calls_per_s": num_seeds / seconds, "first_call_s": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--num_seeds", default="1,2,4,8")
    parser.add_argument("--envs", type=int, default=20, help="evaluation envs per training seed")
    parser.add_argument("--steps_per_call", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_act", action="store_true")
    parser.add_argument("--stages", default="stage1,stage2", help="training stages to time")
    parser.add_argument("--state_dim", type=int, default=6)
    parser.add_argument("--action_dim", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    config = ml_collections.ConfigDict(load_config(args.config).to_dict())
    horizon = int(config.data.horizon)
    mesh = make_data_mesh()
    data = random_segment_data(horizon, args.state_dim, args.action_dim)
    ae_model = make_autoencoder(config.model, args.state_dim, args.action_dim, horizon)
    tf_model = make_transformer(config.model, args.state_dim)
    rows = []
    for n in (int(v) for v in args.num_seeds.split(",")):
        stage1_state, stage2_state = stacked_states(config, n, args.state_dim, args.action_dim, mesh)
        ae_params = stage1_state.params
        stage2 = lambda state, batch, key, ae: make_stage2_step(config, ae_model, ae)(state, batch, key)  # noqa: E731
        for name, step_fn, state, frozen, stage in (
                ("stage1", make_stage1_step(config), stage1_state, None, config.stage1),
                ("stage2", stage2, stage2_state, ae_params, config.stage2)):
            if name not in args.stages.split(","):
                continue
            state = jax.tree.map(jnp.array, state)  # the call donates it
            rows.append(time_stage(name, step_fn, state, frozen, data, int(stage.batch_size), horizon,
                                   args.steps_per_call, args.repeats, mesh, n))
            print(json.dumps(rows[-1]), flush=True)
        if not args.skip_act:
            params = {"autoencoder": ae_params, "transformer": stage2_state.params}
            rows.append(time_act(config, ae_model, tf_model, params, n, args.envs, args.state_dim,
                                 args.action_dim, args.repeats, mesh))
            print(json.dumps(rows[-1]), flush=True)
    base = {(r["stage"]): r for r in rows if r["num_seeds"] == 1}
    for r in rows:
        if r["stage"] in base:
            key = "seed_calls_per_s" if r["stage"] == "act" else "seed_updates_per_s"
            # N seeds' seed-updates/s against one seed's updates/s (1.0: no loss from stacking)
            r["per_seed_ratio_to_one_seed"] = r[key] / base[r["stage"]][key]
    print("| stage | seeds | seed-updates/s (act: seed-calls/s) | per-seed ratio to N=1 | first call s |")
    print("|---|---|---|---|---|")
    for r in rows:
        rate = r.get("seed_updates_per_s", r.get("seed_calls_per_s"))
        print(f"| {r['stage']} | {r['num_seeds']} | {rate:.2f} | "
              f"{r.get('per_seed_ratio_to_one_seed', float('nan')):.2f} | {r['first_call_s']:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": args.config, "machine": machine_info(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
