"""Acting latency: the first call of the policy's `act` (tracing + compilation) and the median of the
next calls, per batch size. Random parameters of the real shapes (latency does not depend on values).

Cheaper than `throughput.py` on an accelerator, where each compilation of `act` takes 20-45 s: this
compiles once per batch size and measures nothing else. Example:

    python benchmarks/act_latency.py --config default --batches 1,64 --calls 20
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from throughput import PAPER_MS_PER_ACTION, load_config, random_policy, random_states

from mage_jax.models.autoencoder import make_autoencoder
from mage_jax.models.transformer import make_transformer
from mage_jax.training import train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="as throughput.py's --config")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--calls", type=int, default=20, help="timed calls after the first")
    parser.add_argument("--state_dim", type=int, default=6)
    parser.add_argument("--action_dim", type=int, default=2)
    args = parser.parse_args(argv)

    config = ml_collections.ConfigDict(load_config(args.config).to_dict())
    sd, ad, horizon = args.state_dim, args.action_dim, int(config.data.horizon)
    stage1_state, stage2_state = random_states(config, sd, ad)
    params = train.acting_params({train.AUTOENCODER: stage1_state, train.TRANSFORMER: stage2_state})
    act = random_policy(config, make_autoencoder(config.model, sd, ad, horizon),
                        make_transformer(config.model, sd), sd, ad)
    print(f"{args.config} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}; the paper: {PAPER_MS_PER_ACTION} ms per action")
    for batch in (int(b) for b in args.batches.split(",")):
        observations = jax.random.normal(jax.random.PRNGKey(batch), (batch, sd))
        returns, key = jnp.ones((batch,)), jax.random.PRNGKey(2)
        start = time.perf_counter()
        act(params, observations, returns, key).block_until_ready()
        first = time.perf_counter() - start
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            act(params, observations, returns, key).block_until_ready()
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        print(f"batch {batch}: first call {first:.1f} s, median {1e3 * median:.2f} ms "
              f"(min {1e3 * min(times):.2f}), {batch / median:,.0f} actions/s", flush=True)


if __name__ == "__main__":
    main()
