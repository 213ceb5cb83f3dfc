"""Validation metrics on held-out episodes: one fixed batch of windows, one jitted function per stage.

The windows are cut once (fixed key) from the held-out episodes, so every evaluation of every run on
the same dataset sees the same windows and the curves are comparable. What matters for acting is the
action error on *generated* plans, so the transformer's metrics include the acting path itself:
plans sampled with the evaluation's options, read by stage 1's head and (when trained) stage 3's.

Metric names (all means over the held-out windows):
  autoencoder: loss_recon, loss_vq, loss_cond, action_mse_true_plan (stage 1's head on encoded futures)
  transformer: loss_ce, accuracy, accuracy_scale_k, loss_ce_scale_k (teacher-forced, return kept),
               loss_return (the learned target's expectile loss),
               action_mse_true_plan, action_mse_sampled_plan (stage 1's head), plan_start_error
               (decoded sampled plan at t=0 against s_0, normalised units)
  head:        action_mse_sampled_plan (stage 3's head on freshly sampled plans)
  bc:          action_mse
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mage_jax.data.sampler import SegmentData, sample_segments
from mage_jax.models.sampling import sampling_options
from mage_jax.models.transformer import NextScaleTransformer, scale_levels
from mage_jax.training.head import generated_plans, head_action_error, plan_batch
from mage_jax.training.seeds import per_seed
from mage_jax.training.stage1 import autoencoder_losses, masked_action_error
from mage_jax.training.stage2 import encode_token_maps, expectile_loss, token_losses

Metrics = Callable[[Any], dict]  # the stage's params -> {name: float, or (N,) per seed when stacked}


def held_out_batch(data: SegmentData, num_windows: int, horizon: int, seed: int) -> dict:
    """`num_windows` windows of the held-out episodes, cut once with a fixed key."""
    sample = jax.jit(sample_segments, static_argnums=(2, 3))
    return sample(data, jax.random.PRNGKey(seed), int(num_windows), int(horizon))


def _host(metrics: dict) -> dict:
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v)
            for k, v in jax.device_get(metrics).items()}


def _compiled(metrics: Callable, stacked: bool, num_params: int) -> Callable:
    """jit(metrics(*params, batch)), vmapped over the seed axis of the params when stacked."""
    return jax.jit(per_seed(metrics, stacked, in_axes=(0,) * num_params + (None,)))


def autoencoder_validation(ae_model: Any, batch: dict, stacked: bool = False) -> Metrics:
    def metrics(params, batch):
        losses, _ = autoencoder_losses(ae_model, params, batch)
        losses["action_mse_true_plan"] = losses.pop("loss_inv")
        return losses

    compiled = _compiled(metrics, stacked, 1)
    return lambda params: _host(compiled(params, batch))


def acting_path_metrics(ae_model: Any, tf_model: Any, ae_params: Any, tf_params: Any, batch: dict,
                        key: jax.Array, options: dict, head_params: Any = None) -> dict:
    """Action errors of stage 1's head on true and on sampled plans, stage 3's head on the same
    sampled plans (when given), and where the decoded sampled plan starts."""
    segments = batch["segments"]
    s0, rtg0 = segments[:, 0, 1:], segments[:, 0, 0]
    latent = ae_model.apply(ae_params, segments, method="encode")
    true_f_hat = ae_model.apply(ae_params, latent, method="quantize").f_hat
    sampled_f_hat = generated_plans(tf_model, ae_model, tf_params, ae_params, batch, key, options)

    def stage1_error(f_hat):
        predicted = ae_model.apply(ae_params, f_hat, s0, method="inverse_dynamics")
        return masked_action_error(predicted, batch["actions"], batch["mask"])

    decoded = ae_model.apply(ae_params, sampled_f_hat, rtg0, method="decode")
    out = {"action_mse_true_plan": stage1_error(true_f_hat),
           "action_mse_sampled_plan": stage1_error(sampled_f_hat),
           "plan_start_error": jnp.mean(jnp.square(decoded[:, 0, 1:] - s0))}
    if head_params is not None:
        out["head_action_mse_sampled_plan"] = head_action_error(
            ae_model, ae_params, head_params, plan_batch(sampled_f_hat, batch, ae_model.action_horizon))
    return out


def transformer_validation(config: ml_collections.ConfigDict, ae_model: Any, tf_model: Any,
                           ae_params: Any, batch: dict, stacked: bool = False) -> Metrics:
    options = sampling_options(config.sampling)
    levels = scale_levels(tf_model.scales)
    expectile = float(config.stage2.return_expectile)
    key = jax.random.PRNGKey(int(config.data.val_seed))

    def metrics(tf_params, ae_params, batch):
        tokens, inputs = encode_token_maps(ae_model, ae_params, batch["segments"])
        logits = tf_model.apply(tf_params, batch["segments"][:, 0], inputs)
        _, out = token_losses(logits, tokens, tf_model.scales)
        per_token = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                    jnp.concatenate(tokens, axis=1))
        for k in range(len(tf_model.scales)):
            out[f"loss_ce_scale_{k + 1}"] = per_token[:, levels == k].mean()
        predicted = tf_model.apply(tf_params, batch["segments"][:, 0, 1:],
                                   method=NextScaleTransformer.predict_return)
        out["loss_return"] = expectile_loss(predicted, batch["segments"][:, 0, 0], expectile)
        return {**out, **acting_path_metrics(ae_model, tf_model, ae_params, tf_params, batch, key,
                                             options)}

    compiled = _compiled(metrics, stacked, 2)
    return lambda params: _host(compiled(params, ae_params, batch))


def head_validation(config: ml_collections.ConfigDict, ae_model: Any, tf_model: Any, ae_params: Any,
                    tf_params: Any, batch: dict, stacked: bool = False) -> Metrics:
    options = sampling_options(config.sampling)
    key = jax.random.PRNGKey(int(config.data.val_seed))

    def metrics(head_params, ae_params, tf_params, batch):
        f_hat = generated_plans(tf_model, ae_model, tf_params, ae_params, batch, key, options)
        return {"action_mse_sampled_plan": head_action_error(
            ae_model, ae_params, head_params, plan_batch(f_hat, batch, ae_model.action_horizon))}

    compiled = _compiled(metrics, stacked, 3)
    return lambda params: _host(compiled(params, ae_params, tf_params, batch))


def bc_validation(bc_model: Any, batch: dict, stacked: bool = False) -> Metrics:
    def metrics(params, batch):
        predicted = bc_model.apply({"params": params}, batch["states"][:, 0])
        return {"action_mse": jnp.mean(jnp.square(predicted - batch["first_action"]))}

    compiled = _compiled(metrics, stacked, 1)
    return lambda params: _host(compiled(params, batch))


def action_variance(batch: dict) -> float:
    """Variance of the held-out first actions: the error of predicting their mean."""
    return float(np.asarray(jax.device_get(batch["first_action"])).var(axis=0).mean())
