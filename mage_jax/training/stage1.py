"""Stage 1: train the autoencoder, its condition adapter and the latent inverse dynamics together.

loss = lambda_recon * MSE(decoded, segment) + lambda_vq * L_vq + lambda_cond * L_cond
       + lambda_inv * L_inv (mask-aware MSE against the window's first actions).

Dead codes: an EMA of each code's usage (1.0 = a uniform share of the tokens) lives in the train
state; after every update, codes whose usage fell below `dead_code_threshold` are re-seeded from the
residual vectors this batch's codes were matched to (at step 0 every code is, which initialises the
codebook from data instead of VAR's near-zero uniform draw).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from flax.training import train_state

from mage_jax.models.autoencoder import init_autoencoder_params, make_autoencoder
from mage_jax.models.quantizer import code_statistics
from mage_jax.training import optim


class Stage1State(train_state.TrainState):
    """Autoencoder params, optimiser state, step and the per-code usage EMA (V,)."""

    code_usage: jax.Array = struct.field(pytree_node=True, default=None)


def create_stage1_state(config: ml_collections.ConfigDict, key: jax.Array, state_dim: int,
                        action_dim: int) -> Stage1State:
    model = make_autoencoder(config.model, state_dim, action_dim, config.data.horizon)
    params = init_autoencoder_params(model, key)
    return Stage1State.create(apply_fn=model.apply, params=params,
                              tx=optim.make_optimizer(config.stage1),
                              code_usage=jnp.ones((int(config.model.vocab_size),), jnp.float32))


def masked_action_error(predicted: jax.Array, actions: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error of (B, n, A) predictions over the valid steps of each row, averaged over rows."""
    n = predicted.shape[1]
    step_mask = mask[:, :n].astype(jnp.float32)
    per_step = jnp.square(predicted - actions[:, :n]).mean(axis=-1)
    return ((per_step * step_mask).sum(axis=-1) / jnp.maximum(step_mask.sum(axis=-1), 1.0)).mean()


def autoencoder_losses(model, params, batch: dict) -> tuple[dict, Any]:
    """Stage 1's unweighted losses on one batch, and the quantiser output (training and validation)."""
    segments = batch["segments"]
    out = model.apply(params, segments)
    q = out["quantized"]
    losses = {
        "loss_recon": jnp.mean(jnp.square(out["reconstruction"] - segments)),
        "loss_vq": q.vq_loss,
        "loss_cond": jnp.mean(jnp.square(out["start"] - segments[:, 0])),
        "loss_inv": masked_action_error(out["actions"], batch["actions"], batch["mask"]),
    }
    return losses, q


def reseed_dead_codes(codebook: jax.Array, usage: jax.Array, dead: jax.Array, candidates: jax.Array,
                      key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Replace the `dead` rows of the codebook by random candidate vectors; their usage restarts at 1."""
    flat = candidates.reshape(-1, candidates.shape[-1])
    pick_key, noise_key = jax.random.split(key)
    picks = flat[jax.random.randint(pick_key, (codebook.shape[0],), 0, flat.shape[0])]
    picks = picks + 1e-3 * jax.random.normal(noise_key, picks.shape)  # duplicates must differ
    return (jnp.where(dead[:, None], picks, codebook), jnp.where(dead, 1.0, usage))


def make_stage1_step(config: ml_collections.ConfigDict
                     ) -> Callable[[Stage1State, dict, jax.Array], tuple[Stage1State, dict]]:
    """A pure, jit-able `step_fn(state, batch, key) -> (state, metrics)` for stage 1."""
    c, stage = config.model, config.stage1
    schedule = optim.make_schedule(stage)
    vocab = int(c.vocab_size)

    def step_fn(state: Stage1State, batch: dict, key: jax.Array) -> tuple[Stage1State, dict]:
        segments, actions = batch["segments"], batch["actions"]
        model = make_autoencoder(c, segments.shape[-1] - 1, actions.shape[-1], segments.shape[1])

        def loss_fn(params):
            losses, q = autoencoder_losses(model, params, batch)
            loss = (stage.lambda_recon * losses["loss_recon"] + stage.lambda_vq * losses["loss_vq"]
                    + stage.lambda_cond * losses["loss_cond"] + stage.lambda_inv * losses["loss_inv"])
            return loss, (losses, q)

        (loss, (losses, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads)

        counts = jnp.zeros((vocab,), jnp.float32)
        for tokens in q.tokens:
            counts = counts.at[tokens.reshape(-1)].add(1.0)
        share = counts * vocab / counts.sum()  # 1.0 = a uniform share
        usage = c.dead_code_decay * state.code_usage + (1 - c.dead_code_decay) * share
        dead = (usage < c.dead_code_threshold) | (state.step == 0)
        metrics = {**losses, **code_statistics(q.tokens, vocab), "loss": loss,
                   "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
                   "dead_codes": jnp.sum(dead & (state.step > 0)).astype(jnp.float32),
                   "final_residual_mse": jnp.mean(jnp.square(q.residual))}
        if c.reseed_dead_codes:
            params = new_state.params
            codebook, usage = reseed_dead_codes(params["params"]["quantizer"]["codebook"], usage, dead,
                                                q.candidates, key)
            quantizer_params = {**params["params"]["quantizer"], "codebook": codebook}
            params = {**params, "params": {**params["params"], "quantizer": quantizer_params}}
            new_state = new_state.replace(params=params)
        return new_state.replace(code_usage=usage), metrics

    return step_fn
