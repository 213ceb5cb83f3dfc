"""Behaviour cloning: an MLP from the (normalised, flattened) state to the dataset action.

It shares everything with MAGE except the model: the same segment sampler (it uses each window's first
state and first action), optimiser, training loop, checkpoints, evaluation and scoring, so the two are
compared on identical data, seeds and scores. Select it with `--config.algorithm=bc`; its size,
budget and optimiser are `config.bc`, chosen so that its held-out action error and score level off.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from mage_jax.data.normalization import NormStats
from mage_jax.training.optim import make_optimizer, make_schedule


class BCPolicy(nn.Module):
    """MLP state -> action."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, states: jax.Array) -> jax.Array:
        x = states
        for width in self.hidden:
            x = nn.gelu(nn.Dense(width)(x))
        return nn.Dense(self.action_dim)(x)


def make_bc_model(config: ml_collections.ConfigDict, action_dim: int) -> BCPolicy:
    return BCPolicy(action_dim=action_dim, hidden=(int(config.bc.hidden),) * int(config.bc.layers))


def create_bc_state(config: ml_collections.ConfigDict, key: jax.Array, state_dim: int,
                    action_dim: int) -> train_state.TrainState:
    model = make_bc_model(config, action_dim)
    params = model.init(key, jnp.zeros((1, state_dim)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                         tx=make_optimizer(config.bc))


def make_bc_step(config: ml_collections.ConfigDict, action_dim: int):
    """Pure `(state, batch, key) -> (state, metrics)`: MSE on each window's first action."""
    model = make_bc_model(config, action_dim)
    schedule = make_schedule(config.bc)

    def loss_fn(params, batch):
        predicted = model.apply({"params": params}, batch["states"][:, 0])
        return jnp.mean(jnp.square(predicted - batch["first_action"]))

    def step(state, batch, key):
        del key  # deterministic model
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": schedule(state.step)}
        return state.apply_gradients(grads=grads), metrics

    return step


def make_bc_policy(config: ml_collections.ConfigDict, action_dim: int, norm_stats: NormStats,
                   action_low, action_high):
    """`act(params, observations, returns_to_go, key) -> actions`, the same signature as MAGE's."""
    model = make_bc_model(config, action_dim)
    mean, std = jnp.asarray(norm_stats.state_mean), jnp.asarray(norm_stats.state_std)
    low, high = jnp.asarray(action_low), jnp.asarray(action_high)

    @jax.jit
    def act(params, observations, returns_to_go, key):
        del returns_to_go, key  # BC conditions on nothing but the state
        actions = model.apply({"params": params}, (observations - mean) / std)
        return jnp.clip(actions, low, high)

    return act
