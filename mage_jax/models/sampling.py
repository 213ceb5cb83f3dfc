"""Coarse-to-fine sampling of the K token maps with a fixed-size KV cache, in one jitted program.

One transformer forward per scale over that scale's tokens only; keys and values of earlier scales are
read from a (B', sum(l_k), heads, head_dim) cache per block. Classifier-free guidance doubles the batch
(conditional rows, then null-condition rows) and mixes logits = (1 + t) cond - t uncond. After each
scale the sampled codes are embedded, added into f_hat (`add_scale`) and f_hat is area-downsampled to
the next scale's length: the same inputs the transformer saw in training (`teacher_forcing_inputs`).

Scales are static, so the Python loop over scales unrolls into one XLA program with static shapes:
nothing recompiles between calls and there are no host round-trips.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mage_jax.models import quantizer
from mage_jax.models.transformer import NextScaleTransformer, init_kv_cache, scale_offsets


class SamplingTrace(NamedTuple):
    """Everything one sampling pass produced (unused parts are dropped by XLA under jit)."""

    tokens: tuple[jax.Array, ...]  # per scale (B, l_k) int32
    f_hat: jax.Array  # (B, T_lat, C) after all scales
    logits: tuple[jax.Array, ...]  # per scale (B, l_k, V), guided, before temperature/filtering
    f_hat_per_scale: tuple[jax.Array, ...]  # cumulative f_hat after scales 1..K


def sampling_options(sampling_config) -> dict:
    """The sampler's static options from the config's sampling section (`config.sampling`)."""
    return {"cfg_scale": float(sampling_config.cfg_scale), "cfg_ramp": bool(sampling_config.cfg_ramp),
            "temperature": float(sampling_config.temperature), "top_k": int(sampling_config.top_k),
            "top_p": float(sampling_config.top_p)}


def guidance_weights(num_scales: int, cfg_scale: float, cfg_ramp: bool) -> np.ndarray:
    """Guidance strength t per scale: constant, or (VAR) ramped linearly from 0 to cfg_scale."""
    if cfg_ramp and num_scales > 1:
        return cfg_scale * np.arange(num_scales, dtype=np.float32) / (num_scales - 1)
    return np.full((num_scales,), cfg_scale, np.float32)


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 0.0) -> jax.Array:
    """Mask (to -inf) everything outside the top-k codes and outside the top-p probability mass."""
    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    if 0.0 < top_p < 1.0:
        sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # The smallest logit still kept: codes whose preceding mass is below top_p (always >= 1).
        kept = jnp.where(mass_before < top_p, sorted_logits, jnp.inf)
        threshold = jnp.min(kept, axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _check_options(temperature: float, top_k: int, top_p: float, vocab: int) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}); use top_k=1 for greedy sampling")
    if not 0 <= top_k <= vocab:
        raise ValueError(f"top_k must be in [0, vocab_size={vocab}] (0 = off); got {top_k}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (0 = off); got {top_p}")


def _doubled(x: jax.Array, guided: bool) -> jax.Array:
    return jnp.concatenate([x, x], axis=0) if guided else x


def sample_with_trace(tf_model: NextScaleTransformer, ae_model: Any, tf_params: Any, ae_params: Any,
                      cond: jax.Array, key: jax.Array, *, cfg_scale: float = 1.0,
                      cfg_ramp: bool = False, temperature: float = 1.0, top_k: int = 0,
                      top_p: float = 0.0, guided: bool | None = None,
                      forced_tokens: tuple[jax.Array, ...] = ()) -> SamplingTrace:
    """Sample all K token maps for the condition rows `cond` (B, 1+S) = (R_0, s_0).

    Pure and traceable (jit it, or use `make_sampler`). All options are static Python values.
    `guided` (default: cfg_scale != 0 or cfg_ramp) runs the doubled CFG batch; with guided=False the
    conditional model alone is sampled (half the FLOPs). `forced_tokens` (k maps of (B, l_1..l_k))
    replace the first k scales and the rest are sampled conditioned on them (the acting head's
    training: a true coarse plan with the generator's own finer scales).
    """
    scales = tf_model.scales
    _check_options(temperature, top_k, top_p, tf_model.vocab_size)
    if guided is None:
        guided = cfg_scale != 0 or cfg_ramp
    weights = guidance_weights(len(scales), cfg_scale, cfg_ramp)
    batch = cond.shape[0]

    null_mask = jnp.arange(2 * batch) >= batch if guided else None
    cond_emb = tf_model.apply(tf_params, _doubled(cond, guided), null_mask,
                              method=NextScaleTransformer.embed_condition)
    modulations = tf_model.apply(tf_params, cond_emb, method=NextScaleTransformer.modulations)
    cache = init_kv_cache(tf_model, cond_emb.shape[0])

    f_hat = jnp.zeros((batch, scales[-1], tf_model.code_dim), jnp.float32)
    # All randomness in one draw (the PRNG is a loop on CPU): Gumbel-max sampling per scale.
    gumbel = jax.random.gumbel(key, (batch, tf_model.seq_len, tf_model.vocab_size))
    offsets = scale_offsets(scales)
    next_input = None
    tokens, all_logits, f_hats = [], [], []
    for k in range(len(scales)):
        logits, cache = tf_model.apply(tf_params, cond_emb, modulations, cache, k, next_input,
                                       method=NextScaleTransformer.forward_scale)
        if guided:
            t = float(weights[k])
            logits = (1 + t) * logits[:batch] - t * logits[batch:]
        all_logits.append(logits)
        filtered = filter_logits(logits / temperature, top_k, top_p)
        tokens_k = jnp.argmax(filtered + gumbel[:, offsets[k]:offsets[k + 1]], axis=-1)
        if k < len(forced_tokens):
            tokens_k = forced_tokens[k]
        tokens.append(tokens_k.astype(jnp.int32))
        codes = ae_model.apply(ae_params, tokens_k, method="embed")
        f_hat = ae_model.apply(ae_params, f_hat, codes, k, method="add_scale")
        f_hats.append(f_hat)
        if k + 1 < len(scales):
            next_input = _doubled(quantizer.area_downsample(f_hat, scales[k + 1]), guided)
    return SamplingTrace(tuple(tokens), f_hat, tuple(all_logits), tuple(f_hats))


def sample_token_maps(tf_model: NextScaleTransformer, ae_model: Any, tf_params: Any, ae_params: Any,
                      cond: jax.Array, key: jax.Array, **options
                      ) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """(tokens per scale, f_hat) sampled for `cond` (B, 1+S); options as in `sample_with_trace`."""
    trace = sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, key, **options)
    return trace.tokens, trace.f_hat


def make_sampler(tf_model: NextScaleTransformer, ae_model: Any, **options):
    """jit(sample_token_maps) with the models and options fixed: fn(tf_params, ae_params, cond, key)."""
    return jax.jit(functools.partial(sample_token_maps, tf_model, ae_model, **options))


def full_forward_logits(tf_model: NextScaleTransformer, ae_model: Any, tf_params: Any, ae_params: Any,
                        cond: jax.Array, tokens: tuple[jax.Array, ...], *, cfg_scale: float = 0.0,
                        cfg_ramp: bool = False, guided: bool | None = None) -> jax.Array:
    """Guided logits (B, L, V) of all scales in one uncached forward, teacher-forced on `tokens`.

    The reference the KV-cached sampler must reproduce: inputs come from the autoencoder's
    `teacher_forcing_inputs`, not from the sampler's own f_hat bookkeeping.
    """
    if guided is None:
        guided = cfg_scale != 0 or cfg_ramp
    codes = [ae_model.apply(ae_params, t, method="embed") for t in tokens]
    inputs = ae_model.apply(ae_params, codes, method="teacher_forcing_inputs")
    batch = cond.shape[0]
    null_mask = jnp.arange(2 * batch) >= batch if guided else None
    logits = tf_model.apply(tf_params, _doubled(cond, guided), _doubled(inputs, guided), null_mask)
    if not guided:
        return logits
    weights = guidance_weights(len(tf_model.scales), cfg_scale, cfg_ramp)
    t = jnp.repeat(jnp.asarray(weights), np.asarray(tf_model.scales))[None, :, None]
    return (1 + t) * logits[:batch] - t * logits[batch:]
