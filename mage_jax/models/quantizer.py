"""The 1-D multi-scale residual quantiser (VAR's scheme on the time axis).

For each scale k: area-downsample the residual to l_k steps, take the nearest code of the shared
codebook (L2), upsample the code embeddings back to T_lat (linear), refine them with phi_k (a k=3 Conv1d
mixed with its input), add them to f_hat and subtract them from the residual. The last scale has the
latent's own length, so the final residual is what the quantiser could not explain.

Resampling is a fixed matrix per (length, target) pair, built with numpy at trace time: exact adaptive
average pooling when lengths do not divide, and align_corners=False linear interpolation, both
applied with one einsum so they batch and differentiate like any other op.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def validate_scales(scales: Sequence[int], latent_length: int) -> tuple[int, ...]:
    """The schedule as a tuple; a clear error unless it strictly increases and ends at T_lat."""
    scales = tuple(int(s) for s in scales)
    if not scales or scales[0] < 1 or any(b <= a for a, b in zip(scales[:-1], scales[1:], strict=True)):
        raise ValueError(f"model.scales must be strictly increasing positive lengths; got {scales}")
    if scales[-1] != latent_length:
        raise ValueError(f"the last of model.scales {scales} must equal the latent length T_lat = "
                         f"horizon / downsample = {latent_length}; set model.scales to end in "
                         f"{latent_length} or change data.horizon / model.downsample")
    return scales


@functools.cache
def area_matrix(length: int, target: int) -> np.ndarray:
    """(target, length) adaptive-average-pooling weights (PyTorch's start/end rule)."""
    m = np.zeros((target, length), np.float32)
    for i in range(target):
        start, end = (i * length) // target, -((-(i + 1) * length) // target)
        m[i, start:end] = 1.0 / (end - start)
    return m


@functools.cache
def linear_matrix(length: int, target: int) -> np.ndarray:
    """(target, length) linear-interpolation weights with align_corners=False."""
    m = np.zeros((target, length), np.float32)
    for i in range(target):
        src = min(max((i + 0.5) * length / target - 0.5, 0.0), length - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, length - 1)
        m[i, lo] += 1.0 - (src - lo)
        m[i, hi] += src - lo
    return m


def _resample(x: jax.Array, matrix: np.ndarray) -> jax.Array:
    return jnp.einsum("tl,blc->btc", jnp.asarray(matrix, x.dtype), x)


def area_downsample(x: jax.Array, length: int) -> jax.Array:
    """(B, T, C) -> (B, length, C) by adaptive average pooling (identity when length == T)."""
    return x if x.shape[1] == length else _resample(x, area_matrix(x.shape[1], length))


def linear_upsample(x: jax.Array, length: int) -> jax.Array:
    """(B, l, C) -> (B, length, C) by linear interpolation (identity when l == length)."""
    return x if x.shape[1] == length else _resample(x, linear_matrix(x.shape[1], length))


def phi_index(scale_index: int, num_scales: int, num_phis: int) -> int:
    """Which shared phi refines scale k: the nearest of `num_phis` evenly spaced scale fractions."""
    at = scale_index / max(num_scales - 1, 1)
    ticks = np.linspace(1 / 3 / num_phis, 1 - 1 / 3 / num_phis, num_phis)
    return int(np.argmin(np.abs(ticks - at)))


def nearest_codes(x: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the L2-nearest codebook row for every vector of x (..., C)."""
    distances = (jnp.sum(jnp.square(x), -1, keepdims=True) - 2 * x @ codebook.T
                 + jnp.sum(jnp.square(codebook), -1))
    return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def code_statistics(tokens: Sequence[jax.Array], vocab_size: int) -> dict:
    """Per scale: share of the codebook used in the batch and perplexity of the code histogram."""
    metrics = {}
    for k, t in enumerate(tokens):
        counts = jnp.zeros((vocab_size,), jnp.float32).at[t.reshape(-1)].add(1.0)
        p = counts / counts.sum()
        metrics[f"code_usage_scale_{k + 1}"] = jnp.mean(counts > 0)
        metrics[f"perplexity_scale_{k + 1}"] = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0)))
    return metrics


class QuantizerOutput(NamedTuple):
    f_hat: jax.Array  # (B, T, C) straight-through: value f_hat, gradient to the encoder's f
    tokens: tuple[jax.Array, ...]  # per scale (B, l_k) int32
    vq_loss: jax.Array  # mean over scales of beta*||sg(f_hat_k)-f||^2 + ||f_hat_k-sg(f)||^2
    residual: jax.Array  # f - f_hat after the last scale
    f_hat_per_scale: tuple[jax.Array, ...]  # cumulative f_hat after scales 1..K (no straight-through)
    candidates: jax.Array  # (B, sum(l_k), C) the residuals the codes were matched to (for re-seeding)


class MultiScaleQuantizer(nn.Module):
    """One shared codebook (V x C) and `num_phis` phi convolutions; see the module docstring."""

    scales: tuple[int, ...]
    vocab_size: int
    code_dim: int
    phi_ratio: float = 0.5
    num_phis: int = 4
    beta: float = 0.25

    def setup(self):
        limit = 1.0 / self.vocab_size  # VAR's uniform(-1/V, 1/V) codebook initialisation
        self.codebook = self.param(
            "codebook", lambda key, shape: jax.random.uniform(key, shape, minval=-limit, maxval=limit),
            (self.vocab_size, self.code_dim))
        self.phis = [nn.Conv(self.code_dim, (3,), padding="SAME", name=f"phi_{i}")
                     for i in range(self.num_phis)]

    def embed(self, tokens: jax.Array) -> jax.Array:
        """(B, l) token ids -> (B, l, C) code embeddings."""
        return self.codebook[tokens]

    def embed_soft(self, probs: jax.Array) -> jax.Array:
        """(B, l, V) code probabilities (e.g. Gumbel-softmax) -> (B, l, C) mixed embeddings."""
        return probs @ self.codebook

    def add_scale(self, f_hat: jax.Array, codes: jax.Array, scale_index: int) -> jax.Array:
        """f_hat + phi_k(upsample(codes)): add scale k's (B, l_k, C) codes to the (B, T, C) f_hat."""
        h = linear_upsample(codes, self.scales[-1])
        phi = self.phis[phi_index(scale_index, len(self.scales), self.num_phis)]
        return f_hat + (1 - self.phi_ratio) * h + self.phi_ratio * phi(h)

    def tokens_to_f_hat(self, tokens: Sequence[jax.Array]) -> jax.Array:
        """The f_hat that K token maps stand for (what the decoder and inverse dynamics read)."""
        f_hat = jnp.zeros((tokens[0].shape[0], self.scales[-1], self.code_dim), jnp.float32)
        for k, t in enumerate(tokens):
            f_hat = self.add_scale(f_hat, self.embed(t), k)
        return f_hat

    def teacher_forcing_inputs(self, codes: Sequence[jax.Array]) -> jax.Array:
        """(B, l_2 + ... + l_K, C): the cumulative f_hat after scales < k, downsampled to l_k."""
        f_hat = jnp.zeros((codes[0].shape[0], self.scales[-1], self.code_dim), jnp.float32)
        inputs = []
        for k in range(len(self.scales) - 1):
            f_hat = self.add_scale(f_hat, codes[k], k)
            inputs.append(area_downsample(f_hat, self.scales[k + 1]))
        return jnp.concatenate(inputs, axis=1)

    def __call__(self, f: jax.Array) -> QuantizerOutput:
        """Quantise the encoder output f (B, T_lat, C) into K token maps."""
        if f.ndim != 3 or f.shape[1] != self.scales[-1] or f.shape[2] != self.code_dim:
            raise ValueError(f"quantiser input must be (batch, {self.scales[-1]}, {self.code_dim}); "
                             f"got {f.shape}")
        f_detached = jax.lax.stop_gradient(f)
        codebook = self.codebook
        f_hat = jnp.zeros_like(f)
        residual = f_detached
        tokens, f_hats, candidates, vq_loss = [], [], [], 0.0
        for k, length in enumerate(self.scales):
            pooled = area_downsample(residual, length)
            idx = nearest_codes(pooled, jax.lax.stop_gradient(codebook))
            tokens.append(idx)
            candidates.append(jax.lax.stop_gradient(pooled))
            f_hat = self.add_scale(f_hat, codebook[idx], k)
            residual = f_detached - f_hat
            f_hats.append(f_hat)
            vq_loss = vq_loss + (self.beta * jnp.mean(jnp.square(jax.lax.stop_gradient(f_hat) - f))
                                 + jnp.mean(jnp.square(f_hat - f_detached)))
        straight_through = jax.lax.stop_gradient(f_hat - f) + f
        return QuantizerOutput(straight_through, tuple(tokens), vq_loss / len(self.scales),
                               jax.lax.stop_gradient(residual), tuple(f_hats),
                               jnp.concatenate(candidates, axis=1))
