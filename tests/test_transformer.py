"""Next-scale transformer: block-causal structure, KV-cache equivalence, and stage-2 learning."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mage_jax.configs import apply_size, base_config
from mage_jax.models.transformer import (
    NextScaleTransformer,
    block_causal_mask,
    init_kv_cache,
    init_transformer_params,
    make_transformer,
    scale_levels,
    scale_offsets,
)
from mage_jax.training import optim
from mage_jax.training.stage2 import token_losses, transformer_loss

SCALES = (1, 2, 3, 4)
COND_DIM = 4
CODE_DIM = 8
BATCH = 3  # one shape for every test, so the fixture's forward compiles once


@pytest.fixture(scope="module")
def tiny():
    model = NextScaleTransformer(scales=SCALES, vocab_size=16, code_dim=CODE_DIM, cond_dim=COND_DIM,
                                 width=32, depth=2, heads=2)
    params = init_transformer_params(model, jax.random.PRNGKey(0))
    params = _randomize_adaln(params)
    no_null = jnp.zeros((BATCH,), bool)
    forward = jax.jit(lambda p, cond, inputs, null_mask=no_null: model.apply(p, cond, inputs, null_mask))
    return model, params, forward


@jax.jit
def _randomize_adaln(params):
    """Give the zero-initialised AdaLN layers weights so the condition path is exercised."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: (0.05 * jax.random.normal(jax.random.PRNGKey(len(path)), x.shape)
                         if "ada" in jax.tree_util.keystr(path) else x), params)


def _random_inputs(batch=BATCH, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    cond = jax.random.normal(k1, (batch, COND_DIM))
    inputs = jax.random.normal(k2, (batch, sum(SCALES) - SCALES[0], CODE_DIM))
    return cond, inputs


def test_block_causal_mask_lets_a_token_see_its_own_and_coarser_scales():
    mask = block_causal_mask(SCALES)
    levels = scale_levels(SCALES)
    assert mask.shape == (10, 10)
    for i in range(10):
        for j in range(10):
            assert mask[i, j] == (levels[j] <= levels[i])
    assert scale_offsets(SCALES) == [0, 1, 3, 6, 10]


@pytest.mark.parametrize("scale", [1, 2])
def test_changing_an_input_of_scale_k_changes_only_scales_k_and_finer(tiny, scale):
    model, params, forward = tiny
    cond, inputs = _random_inputs()
    start = scale_offsets(SCALES)[scale]  # sequence position of scale `scale` (0-based)
    changed = inputs.at[:, start - SCALES[0]].add(1.0)
    before, after = forward(params, cond, inputs), forward(params, cond, changed)
    levels = scale_levels(SCALES)
    diff = np.abs(np.asarray(after - before)).max(axis=(0, 2))  # per position
    assert np.all(diff[levels < scale] == 0.0), diff
    assert np.all(diff[levels >= scale] > 1e-6), diff


def test_rows_of_a_batch_are_independent(tiny):
    model, params, forward = tiny
    cond, inputs = _random_inputs()
    other_cond, other_inputs = _random_inputs(seed=5)
    # Replace every row but the last: its logits must not move.
    mixed = forward(params, other_cond.at[-1].set(cond[-1]), other_inputs.at[-1].set(inputs[-1]))
    np.testing.assert_allclose(mixed[-1], forward(params, cond, inputs)[-1], atol=1e-5)


def test_condition_and_return_dropout_change_the_logits(tiny):
    model, params, forward = tiny
    cond, inputs = _random_inputs()
    base = forward(params, cond, inputs)
    assert np.abs(np.asarray(forward(params, cond + 1.0, inputs) - base)).max() > 1e-4
    null_first = jnp.array([True, False, False])
    null = forward(params, cond, inputs, null_first)
    assert np.abs(np.asarray(null[0] - base[0])).max() > 1e-4
    np.testing.assert_allclose(null[1:], base[1:], atol=1e-6)
    # Dropout removes the return only: a dropped row ignores R_0 but still sees s_0.
    other_return = forward(params, cond.at[0, 0].add(3.0), inputs, null_first)
    np.testing.assert_allclose(other_return[0], null[0], atol=1e-6)
    other_state = forward(params, cond.at[0, 1:].add(1.0), inputs, null_first)
    assert np.abs(np.asarray(other_state[0] - null[0])).max() > 1e-4


def test_cached_forward_scale_by_scale_equals_full_forward(tiny):
    model, params, forward = tiny
    cond, inputs = _random_inputs(seed=1)
    offsets = scale_offsets(SCALES)

    @jax.jit
    def cached(params, cond, inputs):
        cond_emb = model.apply(params, cond, method=NextScaleTransformer.embed_condition)
        mods = model.apply(params, cond_emb, method=NextScaleTransformer.modulations)
        cache, per_scale = init_kv_cache(model, cond.shape[0]), []
        for k in range(len(SCALES)):
            x = None if k == 0 else inputs[:, offsets[k] - SCALES[0]:offsets[k + 1] - SCALES[0]]
            logits, cache = model.apply(params, cond_emb, mods, cache, k, x,
                                        method=NextScaleTransformer.forward_scale)
            per_scale.append(logits)
        return per_scale

    full = forward(params, cond, inputs)
    for k, logits in enumerate(cached(params, cond, inputs)):
        np.testing.assert_allclose(logits, full[:, offsets[k]:offsets[k + 1]], atol=2e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = base_config()
    apply_size(config, "quicktest")
    config.model.update(dtype="bfloat16", scales=SCALES, tf_depth=1, tf_width=32, vocab_size=16)
    model = make_transformer(config.model, state_dim=3)
    params = init_transformer_params(model, jax.random.PRNGKey(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    cond = jnp.zeros((2, 4))
    inputs = jnp.zeros((2, model.seq_len - 1, model.code_dim))
    logits = jax.jit(model.apply)(params, cond, inputs)
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_bad_shapes_fail_with_a_clear_message(tiny):
    model, params, forward = tiny
    cond, inputs = _random_inputs()
    with pytest.raises(ValueError, match="teacher-forcing inputs must be"):
        model.apply(params, cond, inputs[:, :-1])
    with pytest.raises(ValueError, match=r"condition must be \(batch, 4\)"):
        model.apply(params, cond[:, :3], inputs)
    config = base_config()
    config.model.tf_width, config.model.tf_heads = 30, 4
    with pytest.raises(ValueError, match="divisible by tf_heads"):
        init_transformer_params(make_transformer(config.model, 3), jax.random.PRNGKey(0))


def test_token_losses_report_per_scale_accuracy():
    tokens = (jnp.array([[1]]), jnp.array([[2, 3]]))
    logits = jax.nn.one_hot(jnp.array([[1, 2, 0]]), 4) * 10.0
    loss, metrics = token_losses(logits, tokens, (1, 2))
    assert metrics["accuracy_scale_1"] == 1.0 and metrics["accuracy_scale_2"] == 0.5
    np.testing.assert_allclose(metrics["accuracy"], 2 / 3, rtol=1e-6)
    expected = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.array([[1, 2, 3]])).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_learns_token_maps_that_are_a_function_of_the_condition():
    """> 90% token accuracy within 300 updates when m_1..m_K are determined by (R_0, s_0)."""
    scales, vocab, code_dim, cond_dim, num_conditions = (1, 2, 4, 8), 16, 8, 4, 128
    model = NextScaleTransformer(scales=scales, vocab_size=vocab, code_dim=code_dim,
                                 cond_dim=cond_dim, width=64, depth=2, heads=2)
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    conditions = jax.random.normal(keys[0], (num_conditions, cond_dim))
    # Each token is the argmax of a fixed random linear read-out of the condition.
    readout = jax.random.normal(keys[1], (sum(scales), vocab, cond_dim))
    targets = jnp.argmax(jnp.einsum("plc,nc->npl", readout, conditions), axis=-1)
    offsets = scale_offsets(scales)
    tokens = tuple(targets[:, offsets[k]:offsets[k + 1]] for k in range(len(scales)))
    # Teacher-forcing inputs: a fixed codebook's embedding of the previous scale, resized.
    codebook = jax.random.normal(keys[2], (vocab, code_dim))
    inputs = jnp.concatenate(
        [jnp.repeat(codebook[tokens[k - 1]], scales[k] // scales[k - 1], axis=1)
         for k in range(1, len(scales))], axis=1)

    stage = ml_collections.ConfigDict(dict(
        lr=3e-3, warmup_steps=20, num_steps=300, lr_schedule="cosine", weight_decay=0.0, b1=0.9,
        b2=0.95, grad_clip=1.0, batch_size=num_conditions))
    tx = optim.make_optimizer(stage)
    params = init_transformer_params(model, keys[3])

    @jax.jit
    def step(params, opt_state, step_key):
        grads, _ = jax.grad(
            lambda p: transformer_loss(model, p, conditions, inputs, tokens, step_key, 0.1),
            has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def accuracy(params):
        return token_losses(model.apply(params, conditions, inputs), tokens, scales)[1]["accuracy"]

    opt_state = tx.init(params)
    accuracies = []
    # Checked every 50 updates, stopping at the first above 90% (it takes 50 here): the updates
    # run without XLA:CPU's optimisations (conftest.FAST_COMPILE), at ~0.2 s each.
    for index, step_key in enumerate(jax.random.split(keys[4], 300)):  # not lax.scan: slow on XLA:CPU
        params, opt_state = step(params, opt_state, step_key)
        if (index + 1) % 50 == 0:
            accuracies.append(float(accuracy(params)))
            if accuracies[-1] > 0.9:
                break
    assert accuracies[-1] > 0.9, accuracies
