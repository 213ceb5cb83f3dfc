"""Stage 3: the acting head, trained on the plans the transformer generates.

Stage 1 trains the latent inverse dynamics I(f_hat, s_0) on encoded *true* futures, where it learns
to read fine-scale detail (including the data's action noise) that the generator cannot reproduce:
on generated plans its action error was worse than predicting the mean action. Acting reads a
generated plan, so this stage trains a copy of I, initialised from stage 1's, on exactly that: for
each training window, sample a plan from the frozen transformer with the evaluation's sampling
options, conditioned on the window's own (R_0, s_0), and regress the window's first actions.
The autoencoder and transformer stay frozen; only the head's parameters are in the state.

A plan sampled from (R_0, s_0) alone carries nothing about the window's real future beyond (R_0, s_0),
so a head trained on such plans learns to ignore them: it becomes a shrunken behaviour cloner that
let the ball drift off the goal on PointMaze large (benchmarks/QUALITY.md). With `head.true_scales`
= k, the first k (coarse) scales of each training plan are the window's own encoded future and the
generator samples the finer scales on top of them: the head learns to follow a plan's coarse route,
and to read its finer scales as the generator makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax
from flax.training import train_state

from mage_jax.models.autoencoder import inverse_head_params, with_inverse_head
from mage_jax.models.sampling import sample_with_trace, sampling_options
from mage_jax.training import optim
from mage_jax.training.stage1 import masked_action_error
from mage_jax.training.stage2 import encode_token_maps


def create_head_state(config: ml_collections.ConfigDict, ae_params: Any) -> train_state.TrainState:
    """The head starts as stage 1's inverse dynamics (a copy, so stage 1's stays as it was)."""
    params = jax.tree.map(lambda x: x.copy(), inverse_head_params(ae_params))
    return train_state.TrainState.create(apply_fn=None, params=params,
                                         tx=optim.make_optimizer(config.head))


def generated_plans(tf_model, ae_model, tf_params: Any, ae_params: Any, batch: dict, key: jax.Array,
                    options: dict, true_scales: int = 0) -> jax.Array:
    """f_hat (B, T_lat, C) of plans sampled for each window's own condition (R_0, s_0), with the
    first `true_scales` scales taken from the window's encoded true future."""
    forced = ()
    if true_scales:
        forced = encode_token_maps(ae_model, ae_params, batch["segments"])[0][:true_scales]
    trace = sample_with_trace(tf_model, ae_model, tf_params, ae_params, batch["segments"][:, 0], key,
                              **options, forced_tokens=forced)
    return jax.lax.stop_gradient(trace.f_hat)


def head_action_error(ae_model, ae_params: Any, head_params: Any, f_hat: jax.Array,
                      batch: dict) -> jax.Array:
    """Masked action MSE of the head reading `f_hat` and each window's s_0."""
    predicted = ae_model.apply(with_inverse_head(ae_params, head_params), f_hat,
                               batch["segments"][:, 0, 1:], method="inverse_dynamics")
    return masked_action_error(predicted, batch["actions"], batch["mask"])


def make_head_step(config: ml_collections.ConfigDict, ae_model: Any, tf_model: Any, ae_params: Any,
                   tf_params: Any) -> Callable:
    """A pure, jit-able `step_fn(state, batch, key) -> (state, metrics)` for stage 3."""
    options = sampling_options(config.eval)
    schedule = optim.make_schedule(config.head)
    ae_params, tf_params = jax.lax.stop_gradient((ae_params, tf_params))

    def step_fn(state, batch: dict, key: jax.Array):
        f_hat = generated_plans(tf_model, ae_model, tf_params, ae_params, batch, key, options,
                                config.head.true_scales)
        loss, grads = jax.value_and_grad(
            lambda head: head_action_error(ae_model, ae_params, head, f_hat, batch))(state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return state.apply_gradients(grads=grads), metrics

    return step_fn
