"""Cost of the small-row matmuls that batch-1 sampling is made of, and the latency floor they imply.

Next-scale sampling at batch 1 multiplies (rows x width) activations by every per-token weight matrix
once per scale, with rows = l_k (x2 with CFG). This times a chain of 24 distinct 1 MiB weight
matrices (256 x 1024 and back, like an MLP) at each row count and sums, over a config's scales, the
time per MiB of weights: the floor for the dense layers of one batch-1 `act`, before attention, the
head and sampling.

    python benchmarks/small_matmul.py --config default
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from throughput import load_config

MIB = 2**20


def seconds_per_mib(rows: int, repeats: int = 30) -> float:
    """Best time of one (rows x 256) @ (256 x 1024) or (rows x 1024) @ (1024 x 256) matmul, per MiB."""
    keys = jax.random.split(jax.random.PRNGKey(0), 24)
    weights = [jax.random.normal(k, (256, 1024) if i % 2 == 0 else (1024, 256)) for i, k in enumerate(keys)]

    @jax.jit
    def chain(x, weights):
        for w in weights:
            x = x @ w
        return x

    x = jnp.ones((rows, 256))
    chain(x, weights).block_until_ready()
    best = min(_timed(lambda: chain(x, weights).block_until_ready()) for _ in range(repeats))
    return best / len(weights)  # each matrix is 256 * 1024 * 4 bytes = 1 MiB


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", default="default", help="as in throughput.py")
    args = parser.parse_args()
    config = load_config(args.config)
    scales = [int(s) for s in config.model.scales]
    width, depth = int(config.model.tf_width), int(config.model.tf_depth)
    mlp = int(width * float(config.model.tf_mlp_ratio))
    weight_mib = depth * 4 * width * (3 * width + width + 2 * mlp) / MIB  # qkv, out, mlp in + out
    print(f"{args.config}: scales {scales}, per-token dense weights {weight_mib:.1f} MiB")
    cache = {}
    for guided in (True, False):
        rows = [(2 if guided else 1) * s for s in scales]
        for r in rows:
            if r not in cache:
                cache[r] = seconds_per_mib(r)
        per_mib = sum(cache[r] for r in rows)
        print(f"CFG {'on ' if guided else 'off'}: rows per scale {rows}")
        print("  us per 1 MiB matmul: " + ", ".join(f"{r}: {1e6 * cache[r]:.0f}" for r in rows))
        print(f"  dense-layer floor of one batch-1 act: {1e3 * per_mib * weight_mib:.1f} ms")


if __name__ == "__main__":
    main()
