"""The behaviour-cloning baseline itself: its jitted update learns, and its policy acts as MAGE's does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mage_jax import configs
from mage_jax.baselines import bc
from mage_jax.data.normalization import NormStats

STATE_DIM, ACTION_DIM, BATCH, HORIZON = 5, 2, 64, 4


@pytest.fixture(scope="module")
def config():
    c = configs.apply_size(configs.base_config(), "quicktest")
    c.bc.update(num_steps=60, warmup_steps=0, lr_schedule="constant", lr=3e-3)
    return c


def _batch(key):
    """Windows whose first action is a fixed smooth function of their first state."""
    states = jax.random.normal(key, (BATCH, HORIZON, STATE_DIM))
    first = states[:, 0]
    actions = jnp.tanh(jnp.stack([first[:, 0] - 0.5 * first[:, 1], first[:, 2] * first[:, 3]], -1))
    return {"states": states, "first_action": actions}


def test_bc_steps_lower_the_loss(config):
    state = bc.create_bc_state(config, jax.random.PRNGKey(0), STATE_DIM, ACTION_DIM)
    hidden = [v["kernel"].shape for v in state.params.values()]
    assert hidden == [(STATE_DIM, 64), (64, 64), (64, ACTION_DIM)]  # config.bc.hidden x layers
    step = jax.jit(bc.make_bc_step(config, ACTION_DIM))
    batch = _batch(jax.random.PRNGKey(1))
    losses = []
    for i in range(config.bc.num_steps):
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
        losses.append(float(metrics["loss"]))
        assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["lr"]) == pytest.approx(3e-3)
    assert int(state.step) == config.bc.num_steps
    assert losses[-1] < 0.1 * losses[0], losses
    # It generalises to fresh windows of the same rule, not just the batch it saw.
    fresh = _batch(jax.random.PRNGKey(2))
    _, fresh_metrics = step(state, fresh, jax.random.PRNGKey(0))
    assert float(fresh_metrics["loss"]) < 0.5 * losses[0]


def test_bc_policy_normalises_observations_and_clips_to_the_action_bounds(config):
    model = bc.make_bc_model(config, ACTION_DIM)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, STATE_DIM)))["params"]
    mean = np.arange(STATE_DIM, dtype=np.float32) * 10.0
    std = np.full(STATE_DIM, 4.0, np.float32)
    low, high = np.array([-0.05, -1.0], np.float32), np.array([0.05, 1.0], np.float32)
    act = bc.make_bc_policy(config, ACTION_DIM, NormStats(mean, std), low, high)
    observations = np.random.default_rng(0).normal(size=(16, STATE_DIM)).astype(np.float32) * 30 + mean
    # The return-to-go and key are ignored: BC conditions on the state alone.
    actions = np.asarray(act(params, observations, np.ones(16, np.float32), jax.random.PRNGKey(3)))
    again = np.asarray(act(params, observations, np.zeros(16, np.float32), jax.random.PRNGKey(4)))
    np.testing.assert_array_equal(actions, again)
    raw = np.asarray(model.apply({"params": params}, (observations - mean) / std))
    np.testing.assert_allclose(actions, np.clip(raw, low, high), rtol=1e-5, atol=1e-6)
    assert np.all(actions >= low) and np.all(actions <= high)
    assert np.any(np.abs(raw[:, 0]) > 0.05)  # the bound on the first action did bite
    # Unnormalised observations would give other actions: the policy really normalises.
    unnormalised = np.clip(np.asarray(model.apply({"params": params}, observations)), low, high)
    assert not np.allclose(actions, unnormalised)
