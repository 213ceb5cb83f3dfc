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
let the ball drift off the goal on PointMaze large (docs/decisions.md#head-true-scales). With
`head.true_scales` = k, the first k (coarse) scales of each training plan are the window's own
encoded future and the generator samples the finer scales on top of them: the head learns to
follow a plan's coarse route, and to read its finer scales as the generator makes them.

Sampling a plan costs far more than the head's update, so fresh plans every update hold the head
to a few thousand updates. With `head.plan_buffer` = N, plans are sampled once for N training windows
(`make_plan_buffer`) and the head trains on draws from that buffer for as many updates as it needs
to converge, at the cost of N plans; the held-out metric still reads freshly sampled plans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from mage_jax.data.sampler import SegmentData, sample_segments
from mage_jax.models.autoencoder import inverse_head_params, with_inverse_head
from mage_jax.models.sampling import sample_with_trace, sampling_options
from mage_jax.training import optim
from mage_jax.training.seeds import per_seed
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


def plan_batch(f_hat: jax.Array, batch: dict, action_horizon: int) -> dict:
    """What the head's loss reads of windows `batch` with plans `f_hat`: {f_hat, s0, actions, mask}."""
    return {"f_hat": f_hat, "s0": batch["segments"][:, 0, 1:],
            "actions": batch["actions"][:, :action_horizon], "mask": batch["mask"][:, :action_horizon]}


def head_action_error(ae_model, ae_params: Any, head_params: Any, plans: dict) -> jax.Array:
    """Masked action MSE of the head reading each plan (`plan_batch`) and its window's s_0."""
    predicted = ae_model.apply(with_inverse_head(ae_params, head_params), plans["f_hat"], plans["s0"],
                               method="inverse_dynamics")
    return masked_action_error(predicted, plans["actions"], plans["mask"])


@struct.dataclass
class PlanBuffer:
    """`plan_batch` fields of N training windows, whose plans were sampled once."""

    plans: dict  # f_hat (N, T_lat, C), s0 (N, S), actions (N, n, A), mask (N, n)


def sample_plan_buffer(buffer: PlanBuffer, key: jax.Array, batch_size: int, horizon: int) -> dict:
    """A batch of `batch_size` buffered plans drawn uniformly (the loop's sampler; horizon unused)."""
    del horizon
    index = jax.random.randint(key, (batch_size,), 0, buffer.plans["f_hat"].shape[0])
    return jax.tree.map(lambda x: x[index], buffer.plans)


def make_plan_buffer(config: ml_collections.ConfigDict, ae_model: Any, tf_model: Any, ae_params: Any,
                     tf_params: Any, data: SegmentData, key: jax.Array, sharding=None,
                     progress: Callable[[int], None] | None = None,
                     stacked: bool = False) -> PlanBuffer:
    """Sample `config.head.plan_buffer` plans (windows drawn as in training, `head.true_scales` true
    coarse scales), `head.batch_size` x 8 windows per jitted call; deterministic in `key`.
    `stacked`: the params and keys have a leading seed axis, and so does the buffer (N, size, ...)."""
    size, chunk = int(config.head.plan_buffer), 8 * int(config.head.batch_size)
    options = sampling_options(config.sampling)

    def sample_chunk(ae_params, tf_params, data, key, index):
        chunk_key = jax.random.fold_in(key, index)
        window_key, plan_key = jax.random.split(chunk_key)
        batch = sample_segments(data, window_key, chunk, config.data.horizon)
        f_hat = generated_plans(tf_model, ae_model, tf_params, ae_params, batch, plan_key, options,
                                config.head.true_scales)
        return plan_batch(f_hat, batch, ae_model.action_horizon)

    sample = jax.jit(per_seed(sample_chunk, stacked, in_axes=(0, 0, None, 0, None)))
    chunks = []
    for i in range(-(-size // chunk)):
        chunks.append(jax.device_get(sample(ae_params, tf_params, data, key, i)))
        if progress is not None:
            progress(min((i + 1) * chunk, size))
    axis = 1 if stacked else 0
    plans = jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis).take(np.arange(size), axis=axis),
                         *chunks)
    return PlanBuffer(jax.device_put(plans, sharding))


def make_head_step(config: ml_collections.ConfigDict, ae_model: Any, tf_model: Any, ae_params: Any,
                   tf_params: Any) -> Callable:
    """A pure, jit-able `step_fn(state, batch, key) -> (state, metrics)` for stage 3. `batch` is
    either training windows (a plan is sampled for each) or buffered plans (`sample_plan_buffer`)."""
    options = sampling_options(config.sampling)
    schedule = optim.make_schedule(config.head)
    ae_params, tf_params = jax.lax.stop_gradient((ae_params, tf_params))

    def step_fn(state, batch: dict, key: jax.Array):
        if "f_hat" not in batch:
            f_hat = generated_plans(tf_model, ae_model, tf_params, ae_params, batch, key, options,
                                    config.head.true_scales)
            batch = plan_batch(f_hat, batch, ae_model.action_horizon)
        loss, grads = jax.value_and_grad(
            lambda head: head_action_error(ae_model, ae_params, head, batch))(state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        return state.apply_gradients(grads=grads), metrics

    return step_fn
