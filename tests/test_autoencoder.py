"""The trajectory autoencoder and the stage-1 step: shapes, errors, dead codes, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mage_jax.configs import apply_size, base_config
from mage_jax.models.autoencoder import make_autoencoder
from mage_jax.training.stage1 import (
    create_stage1_state,
    make_stage1_step,
    masked_action_error,
    reseed_dead_codes,
)

STATE_DIM, ACTION_DIM, BATCH = 3, 2, 32


def _config():
    c = apply_size(base_config(), "quicktest")  # horizon 32, downsample 2, scales up to 16
    c.stage1.update(lr=2e-3, warmup_steps=10, lr_schedule="constant")
    return c


def smooth_batch(key, batch=BATCH, horizon=32):
    """Random smooth trajectories: a few sinusoids per channel, actions a function of the states."""
    k1, k2, k3 = jax.random.split(key, 3)
    t = jnp.linspace(0.0, 1.0, horizon)[None, :, None]
    freq = jax.random.uniform(k1, (batch, 1, 1 + STATE_DIM), minval=0.3, maxval=1.5)
    phase = jax.random.uniform(k2, (batch, 1, 1 + STATE_DIM), maxval=2 * np.pi)
    amp = jax.random.uniform(k3, (batch, 1, 1 + STATE_DIM), minval=0.5, maxval=1.5)
    segments = amp * jnp.sin(2 * np.pi * freq * t + phase)
    actions = jnp.tanh(segments[:, :, 1:1 + ACTION_DIM] - segments[:, :, 2:2 + ACTION_DIM])
    return {"segments": segments, "actions": actions, "mask": jnp.ones((batch, horizon), bool)}


def test_forward_shapes_and_methods():
    c = _config()
    model = make_autoencoder(c.model, STATE_DIM, ACTION_DIM, c.data.horizon)
    batch = smooth_batch(jax.random.PRNGKey(0), batch=2)
    params = jax.jit(model.init)(jax.random.PRNGKey(1), batch["segments"])
    out = jax.jit(model.apply)(params, batch["segments"])
    assert out["latent"].shape == (2, 16, c.model.code_dim)
    assert out["reconstruction"].shape == batch["segments"].shape
    assert out["start"].shape == (2, 1 + STATE_DIM)
    assert out["actions"].shape == (2, 1, ACTION_DIM)


@pytest.mark.parametrize("field, value, match", [
    ("scales", (1, 2, 4, 8), "latent length"),
    ("downsample", 3, "power of 2"),
])
def test_bad_model_config_is_a_clear_error(field, value, match):
    c = _config()
    c.model[field] = value
    model = make_autoencoder(c.model, STATE_DIM, ACTION_DIM, c.data.horizon)
    with pytest.raises(ValueError, match=match):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, c.data.horizon, 1 + STATE_DIM)))


def test_inverse_dynamics_loss_ignores_padded_steps():
    predicted = jnp.zeros((2, 2, 1))
    actions = jnp.array([[[1.0], [5.0]], [[2.0], [2.0]]])
    mask = jnp.array([[1, 0], [1, 1]])
    assert float(masked_action_error(predicted, actions, mask)) == pytest.approx((1.0 + 4.0) / 2)


def test_dead_codes_are_reseeded_from_candidates_and_live_ones_kept():
    codebook = jnp.zeros((4, 3))
    usage = jnp.array([1.0, 0.0, 1.0, 0.0])
    candidates = jnp.full((2, 5, 3), 7.0)
    new, new_usage = reseed_dead_codes(codebook, usage, usage < 0.5, candidates, jax.random.PRNGKey(0))
    np.testing.assert_allclose(new[jnp.array([0, 2])], 0.0)
    np.testing.assert_allclose(new[jnp.array([1, 3])], 7.0, atol=1e-2)
    np.testing.assert_allclose(new_usage, 1.0)


ENOUGH = {"loss_recon": 10.0, "loss_inv": 2.0, "loss_cond": 5.0}  # how far each loss must fall


def test_stage1_learns_smooth_trajectories_and_uses_the_codebook():
    """Within 300 steps the reconstruction MSE falls >= 10x, the inverse dynamics' error 2x and the
    adapter's 5x (checked every 25 steps; here all three hold from about step 75); most of the
    codebook is used."""
    c = _config()
    # Built and applied under jit: op by op (the optimiser state, the forward pass) each takes seconds.
    state = jax.jit(lambda key: create_stage1_state(c, key, STATE_DIM, ACTION_DIM))(jax.random.PRNGKey(0))
    step_fn = make_stage1_step(c)

    @jax.jit
    def update(state, key):
        data_key, step_key = jax.random.split(key)
        return step_fn(state, smooth_batch(data_key), step_key)

    def falls(history) -> dict:
        """Each loss's first value over the mean of its last 20."""
        metrics = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history))
        return {name: float(metrics[name][0] / metrics[name][-20:].mean()) for name in ENOUGH}

    history = []
    # One update per call, not lax.scan (slow on XLA:CPU).
    for step, key in enumerate(jax.random.split(jax.random.PRNGKey(1), 300), 1):
        state, m = update(state, key)
        history.append(m)
        if step % 25 == 0 and all(fall >= ENOUGH[name] for name, fall in falls(history).items()):
            break
    assert all(fall >= ENOUGH[name] for name, fall in falls(history).items()), (step, falls(history))
    # Codebook use on fresh data, over all scales.
    model = make_autoencoder(c.model, STATE_DIM, ACTION_DIM, c.data.horizon)
    out = jax.jit(model.apply)(state.params, smooth_batch(jax.random.PRNGKey(2), batch=128)["segments"])
    used = np.unique(np.concatenate([np.asarray(t).ravel() for t in out["quantized"].tokens]))
    assert len(used) > c.model.vocab_size / 2, len(used)
