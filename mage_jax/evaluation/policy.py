"""The MAGE policy: observations and remaining return -> sampled plan -> latent inverse dynamics.

`act` is one jitted pure function over a leading batch axis (the evaluation seeds): normalise the
states, scale the return-to-go, sample the K token maps with the KV-cached transformer (optionally with
classifier-free guidance), and read the action(s) off the summed code embeddings with the acting
head (stage 3's, trained on generated plans; stage 1's inverse dynamics when there is none). The plan
is never decoded on this path; `make_plan_trajectory` decodes it after every scale for the plots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mage_jax.models.autoencoder import with_inverse_head
from mage_jax.models.sampling import sample_with_trace, sampling_options
from mage_jax.models.transformer import NextScaleTransformer

# {"autoencoder": ..., "transformer": ..., optionally "head": the stage-3 acting head's params}
Params = dict


class _Conditioner:
    """Raw flattened observations and unscaled returns-to-go -> transformer condition (R_0, s_0)."""

    def __init__(self, norm_stats: Any, rtg_scale: float, tf_model: NextScaleTransformer,
                 learned_target: bool = False):
        self.tf_model = tf_model
        self.learned_target = bool(learned_target)
        self.mean = np.asarray(norm_stats.state_mean, np.float32)
        self.std = np.asarray(norm_stats.state_std, np.float32)
        self.rtg_scale = float(rtg_scale)
        if self.rtg_scale <= 0:
            raise ValueError(f"data.rtg_scale must be > 0, got {rtg_scale}")

    def __call__(self, tf_params: Any, observations: jax.Array, returns_to_go: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
        """With learned_target, the return is the transformer's learned best return of each state
        and `returns_to_go` is ignored."""
        observations = jnp.asarray(observations, jnp.float32)
        returns_to_go = jnp.asarray(returns_to_go, jnp.float32)
        state_dim = self.mean.shape[0]
        if observations.ndim != 2 or observations.shape[-1] != state_dim:
            raise ValueError(f"observations must be (batch, {state_dim}) flattened states; got shape "
                             f"{observations.shape}")
        if returns_to_go.shape != observations.shape[:1]:
            raise ValueError(f"returns_to_go must be (batch,) = ({observations.shape[0]},); got shape "
                             f"{returns_to_go.shape}")
        states = (observations - self.mean) / self.std
        target = returns_to_go / self.rtg_scale
        if self.learned_target:
            target = self.tf_model.apply(tf_params, states, method=NextScaleTransformer.predict_return)
        return jnp.concatenate([target[:, None], states], axis=-1), states


def _check_models(config: ml_collections.ConfigDict, tf_model: NextScaleTransformer,
                  state_dim: int) -> None:
    if tf_model.cond_dim != 1 + state_dim:
        raise ValueError(f"the transformer expects {tf_model.cond_dim - 1}-D states but the "
                         f"normalisation statistics are {state_dim}-D; they come from different runs")
    if tuple(tf_model.scales) != tuple(config.model.scales):
        raise ValueError(f"transformer scales {tf_model.scales} differ from config.model.scales "
                         f"{tuple(config.model.scales)}")


def make_policy(config: ml_collections.ConfigDict, ae_model: Any, tf_model: NextScaleTransformer,
                norm_stats: Any, action_low: Any, action_high: Any
                ) -> Callable[[Params, jax.Array, jax.Array, jax.Array], jax.Array]:
    """jit(act): act(params, observations (N, S) raw, returns_to_go (N,) unscaled, key) -> actions.

    Returns (N, A) actions, or with config.eval.action_chunk = n > 1 the (N, n, A) planned actions to
    execute in order before calling again. With config.eval.num_plans = M > 1, M plans are sampled per
    row (M times the sampling work) and `eval.plan_reduce` says how to act on them. Actions are
    clipped to [action_low, action_high]. `params` is {"autoencoder": ..., "transformer": ...,
    optionally "head": ...}. Pure, so it can be vmapped or sharded over seeds.
    """
    conditioner = _Conditioner(norm_stats, config.data.rtg_scale, tf_model, config.sampling.learned_target)
    _check_models(config, tf_model, conditioner.mean.shape[0])
    chunk = int(config.eval.action_chunk)
    horizon = int(config.model.get("action_horizon", 1))
    if not 1 <= chunk <= horizon:
        raise ValueError(f"eval.action_chunk={chunk} must be between 1 and model.action_horizon="
                         f"{horizon} (the number of actions inverse dynamics predicts per plan)")
    low = jnp.asarray(action_low, jnp.float32)
    high = jnp.asarray(action_high, jnp.float32)
    options = sampling_options(config.sampling)
    num_plans, reduce = int(config.eval.num_plans), str(config.eval.plan_reduce)

    def read_actions(ae_params: Any, head: Any, f_hat: jax.Array, states: jax.Array) -> jax.Array:
        actions = ae_model.apply(with_inverse_head(ae_params, head), f_hat, states,
                                 method="inverse_dynamics")
        return jnp.clip(actions, low, high)  # (rows, n, A)

    def plan_actions(params: Params, cond: jax.Array, states: jax.Array, key: jax.Array) -> jax.Array:
        """(N, n, A): the head's actions on one sampled plan per row, or on `num_plans` of them,
        reduced by `plan_reduce`: 'best' reads the plan whose decoded final state has the highest
        learned best return (`predict_return`), 'mean' averages the actions over all of them."""
        tf_params, ae_params, head = params["transformer"], params["autoencoder"], params.get("head")
        if num_plans == 1:
            f_hat = sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, key,
                                      **options).f_hat
            return read_actions(ae_params, head, f_hat, states)
        batch = cond.shape[0]
        rows = jnp.repeat(cond, num_plans, axis=0)  # all plans in one sampling pass
        f_hat = sample_with_trace(tf_model, ae_model, tf_params, ae_params, rows, key, **options).f_hat
        if reduce == "mean":
            actions = read_actions(ae_params, head, f_hat, jnp.repeat(states, num_plans, axis=0))
            return actions.reshape(batch, num_plans, *actions.shape[1:]).mean(axis=1)
        end_states = ae_model.apply(ae_params, f_hat, rows[:, 0], method="decode")[:, -1, 1:]
        value = tf_model.apply(tf_params, end_states, method=NextScaleTransformer.predict_return)
        best = jnp.argmax(value.reshape(batch, num_plans), axis=1)
        f_hat = f_hat.reshape(batch, num_plans, *f_hat.shape[1:])[jnp.arange(batch), best]
        return read_actions(ae_params, head, f_hat, states)

    @jax.jit
    def act(params: Params, observations: jax.Array, returns_to_go: jax.Array,
            key: jax.Array) -> jax.Array:
        cond, states = conditioner(params["transformer"], observations, returns_to_go)
        actions = plan_actions(params, cond, states, key)
        return actions[:, 0] if chunk == 1 else actions[:, :chunk]

    return act


def make_plan_trajectory(config: ml_collections.ConfigDict, ae_model: Any,
                         tf_model: NextScaleTransformer, norm_stats: Any
                         ) -> Callable[[Params, jax.Array, jax.Array, jax.Array], dict]:
    """jit(plan): the decoded plan after scales 1..K, for the coarse-to-fine plot (one sampled plan
    per row, also when acting picks the best of several).

    plan(params, observations (N, S) raw, returns_to_go (N,) unscaled, key) -> {"states": (N, K, H, S)
    raw (denormalised) states, "returns_to_go": (N, K, H) unscaled, "tokens": tuple of (N, l_k)}.
    Entry k is the decoder's output for the cumulative f_hat of scales 1..k+1.
    """
    conditioner = _Conditioner(norm_stats, config.data.rtg_scale, tf_model, config.sampling.learned_target)
    _check_models(config, tf_model, conditioner.mean.shape[0])
    options = sampling_options(config.sampling)

    @jax.jit
    def plan(params: Params, observations: jax.Array, returns_to_go: jax.Array,
             key: jax.Array) -> dict:
        cond, _ = conditioner(params["transformer"], observations, returns_to_go)
        ae_params = params["autoencoder"]
        trace = sample_with_trace(tf_model, ae_model, params["transformer"], ae_params, cond, key,
                                  **options)
        num_scales, batch = len(trace.f_hat_per_scale), cond.shape[0]
        f_hats = jnp.concatenate(trace.f_hat_per_scale, axis=0)  # (K*N, T_lat, C), scale-major
        rtg0 = jnp.tile(cond[:, 0], num_scales)
        decoded = ae_model.apply(ae_params, f_hats, rtg0, method="decode")  # (K*N, H, 1+S)
        decoded = jnp.swapaxes(decoded.reshape(num_scales, batch, *decoded.shape[1:]), 0, 1)
        states = decoded[..., 1:] * conditioner.std + conditioner.mean
        return {"states": states, "returns_to_go": decoded[..., 0] * conditioner.rtg_scale,
                "tokens": trace.tokens}

    return plan
