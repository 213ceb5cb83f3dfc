"""Stage 2: train the next-scale transformer on the frozen autoencoder's token maps.

Each batch is encoded by the frozen MTAE (no gradient) into K token maps; the transformer is
teacher-forced on the cumulative code sums and trained with cross-entropy over all sum(l_k) tokens
(uniform weight per token). Condition dropout (config.model.cond_dropout) drops the return R_0 (not
s_0) from the condition of a random subset of rows, which is what classifier-free guidance needs.

A small head on s_0 learns an upper expectile of R_0 (`stage2.return_expectile`): the best return
the data shows from that state, which acting can use as its target (`sampling.learned_target`).

Optional end-to-end term (config.stage2.gumbel_e2e): the logits are relaxed with a straight-through
Gumbel-softmax into soft code mixtures, summed into f_hat through the frozen autoencoder
(`embed_soft`, `add_scale`), and the adapter's start-consistency loss L_cond and the latent
inverse-dynamics loss L_inv then train the transformer too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from mage_jax.models.transformer import (
    NextScaleTransformer,
    init_transformer_params,
    make_transformer,
    scale_levels,
)
from mage_jax.training import optim


class Stage2State(train_state.TrainState):
    """Transformer params, optimiser state and step (apply_fn is the transformer's apply)."""


def create_stage2_state(config: ml_collections.ConfigDict, key: jax.Array,
                        state_dim: int) -> Stage2State:
    """Fresh transformer parameters and optimiser state for `config.model` / `config.stage2`."""
    model = make_transformer(config.model, state_dim)
    params = init_transformer_params(model, key)
    return Stage2State.create(apply_fn=model.apply, params=params,
                              tx=optim.make_optimizer(config.stage2))


def encode_token_maps(ae_model: Any, ae_params: Any, segments: jax.Array
                      ) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """Frozen autoencoder: segments (B, H, 1+S) -> (token maps per scale, teacher-forcing inputs)."""
    ae_params = jax.lax.stop_gradient(ae_params)
    latent = ae_model.apply(ae_params, segments, method="encode")
    tokens = tuple(ae_model.apply(ae_params, latent, method="quantize").tokens)
    codes = [ae_model.apply(ae_params, t, method="embed") for t in tokens]
    inputs = ae_model.apply(ae_params, codes, method="teacher_forcing_inputs")
    return tokens, jax.lax.stop_gradient(inputs)


def token_losses(logits: jax.Array, tokens: tuple[jax.Array, ...],
                 scales: tuple[int, ...]) -> tuple[jax.Array, dict]:
    """Mean cross-entropy over all tokens (uniform weight) and accuracy, overall and per scale."""
    targets = jnp.concatenate(tokens, axis=1)
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"token maps of total length {targets.shape[1]} do not match the "
                         f"transformer's sequence of {logits.shape[1]} tokens (scales {scales})")
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    metrics = {"loss_ce": per_token.mean(), "accuracy": correct.mean()}
    levels = scale_levels(scales)
    for k in range(len(scales)):
        metrics[f"accuracy_scale_{k + 1}"] = correct[:, levels == k].mean()
    return per_token.mean(), metrics


def transformer_loss(tf_model: NextScaleTransformer, params: Any, cond: jax.Array,
                     inputs: jax.Array, tokens: tuple[jax.Array, ...], key: jax.Array,
                     cond_dropout: float) -> tuple[jax.Array, tuple[dict, jax.Array, jax.Array]]:
    """Cross-entropy of teacher-forced logits with condition dropout.

    Returns (loss, (metrics, logits, null_mask)); usable without an autoencoder (feed token maps and
    any teacher-forcing inputs directly).
    """
    null_mask = jax.random.bernoulli(key, cond_dropout, (cond.shape[0],))
    logits = tf_model.apply(params, cond, inputs, null_mask)
    loss, metrics = token_losses(logits, tokens, tf_model.scales)
    return loss, (metrics, logits, null_mask)


def expectile_loss(predicted: jax.Array, target: jax.Array, expectile: float) -> jax.Array:
    """Asymmetric squared error: under-predictions weigh `expectile`, over-predictions 1 - it, so the
    minimiser is the upper expectile of the target (IQL's value loss, Reinformer's return loss)."""
    diff = target - predicted
    return jnp.mean(jnp.where(diff > 0, expectile, 1.0 - expectile) * jnp.square(diff))


def gumbel_straight_through(logits: jax.Array, key: jax.Array, tau: float) -> jax.Array:
    """One-hot samples in the forward pass, Gumbel-softmax gradients in the backward pass."""
    soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / tau, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return hard + soft - jax.lax.stop_gradient(soft)


def end_to_end_losses(ae_model: Any, ae_params: Any, logits: jax.Array, batch: dict,
                      row_weight: jax.Array, scales: tuple[int, ...], key: jax.Array,
                      tau: float, action_horizon: int) -> dict:
    """L_cond and L_inv of the f_hat built from Gumbel-relaxed logits (gradients reach the logits)."""
    segments = batch["segments"]
    cond, rtg0, s0 = segments[:, 0], segments[:, 0, 0], segments[:, 0, 1:]
    probs = gumbel_straight_through(logits, key, tau)
    f_hat = None
    start = 0
    for k, length in enumerate(scales):
        codes = ae_model.apply(ae_params, probs[:, start:start + length], method="embed_soft")
        if f_hat is None:
            f_hat = jnp.zeros((codes.shape[0], scales[-1], codes.shape[-1]), jnp.float32)
        f_hat = ae_model.apply(ae_params, f_hat, codes, k, method="add_scale")
        start += length
    weight_sum = jnp.maximum(row_weight.sum(), 1.0)
    start_pred = ae_model.apply(ae_params, f_hat, rtg0, method="adapt")
    cond_err = jnp.square(start_pred - cond).mean(axis=-1)
    actions = ae_model.apply(ae_params, f_hat, s0, method="inverse_dynamics")  # (B, n, A)
    target = batch["actions"][:, :action_horizon]
    step_mask = batch["mask"][:, :action_horizon].astype(jnp.float32)
    inv_err = (jnp.square(actions - target).mean(axis=-1) * step_mask).sum(axis=-1) / jnp.maximum(
        step_mask.sum(axis=-1), 1.0)
    return {"loss_cond": (cond_err * row_weight).sum() / weight_sum,
            "loss_inv": (inv_err * row_weight).sum() / weight_sum}


def make_stage2_step(config: ml_collections.ConfigDict, ae_model: Any, ae_params: Any
                     ) -> Callable[[Stage2State, dict, jax.Array], tuple[Stage2State, dict]]:
    """A pure, jit-able `step_fn(state, batch, key) -> (state, metrics)` for stage 2.

    The autoencoder is frozen: its params are closed over and wrapped in stop_gradient.
    """
    model_config, stage = config.model, config.stage2
    cond_dropout = float(model_config.cond_dropout)
    use_e2e = bool(stage.get("gumbel_e2e", False))
    schedule = optim.make_schedule(stage)

    def step_fn(state: Stage2State, batch: dict, key: jax.Array) -> tuple[Stage2State, dict]:
        segments = batch["segments"]
        tf_model = make_transformer(model_config, segments.shape[-1] - 1)
        tokens, inputs = encode_token_maps(ae_model, ae_params, segments)
        drop_key, gumbel_key = jax.random.split(key)

        def loss_fn(params):
            loss, (metrics, logits, null_mask) = transformer_loss(
                tf_model, params, segments[:, 0], inputs, tokens, drop_key, cond_dropout)
            predicted_return = tf_model.apply(params, segments[:, 0, 1:],
                                              method=NextScaleTransformer.predict_return)
            metrics["loss_return"] = expectile_loss(predicted_return, segments[:, 0, 0],
                                                    float(stage.return_expectile))
            loss = loss + stage.lambda_return * metrics["loss_return"]
            if use_e2e:
                e2e = end_to_end_losses(
                    ae_model, jax.lax.stop_gradient(ae_params), logits, batch,
                    1.0 - null_mask.astype(jnp.float32), tf_model.scales, gumbel_key,
                    float(stage.gumbel_tau), int(model_config.action_horizon))
                loss = loss + stage.lambda_cond * e2e["loss_cond"] + stage.lambda_inv * e2e["loss_inv"]
                metrics = {**metrics, **e2e}
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": schedule(state.step)}
        return state.apply_gradients(grads=grads), metrics

    return step_fn
