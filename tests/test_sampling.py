"""Sampling and acting: KV-cached sampling equals the teacher-forced forward, CFG, filtering, forced
coarse scales, the policy's `act` (with stage 1's or stage 3's head), one stage-2 update (plain and
end-to-end through the Gumbel path), stage-3 updates on generated plans (fully sampled, or on true
coarse scales), acting on the best of several plans, and the acting-path validation metrics.

Everything runs on one tiny autoencoder + transformer on random parameters (AdaLN weights randomised
so the condition matters); the module fixtures compile each program once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mage_jax.configs import base_config
from mage_jax.data.normalization import NormStats
from mage_jax.data.sampler import SegmentData
from mage_jax.evaluation.policy import make_policy
from mage_jax.models.autoencoder import inverse_head_params, make_autoencoder
from mage_jax.models.sampling import (
    filter_logits,
    full_forward_logits,
    sample_with_trace,
    sampling_options,
)
from mage_jax.models.transformer import NextScaleTransformer, make_transformer
from mage_jax.training.head import (
    create_head_state,
    make_head_step,
    make_plan_buffer,
    sample_plan_buffer,
)
from mage_jax.training.optim import make_optimizer
from mage_jax.training.stage2 import Stage2State, make_stage2_step
from mage_jax.training.validation import acting_path_metrics

STATE_DIM, ACTION_DIM, HORIZON = 4, 2, 8
SCALES = (1, 2, 4)  # T_lat = 8 / 2
BATCH = 5
VOCAB = 32


def _tiny_config(action_horizon: int = 1):
    c = base_config()
    c.data.horizon = HORIZON
    c.model.update(scales=SCALES, hidden_channels=16, num_res_blocks=1, downsample=2, code_dim=8,
                   vocab_size=VOCAB, inv_hidden=32, inv_layers=1, tf_depth=2, tf_width=32, tf_heads=2,
                   action_horizon=action_horizon)
    c.stage2.update(batch_size=8, num_steps=10, warmup_steps=0, lr_schedule="constant", lr=3e-4)
    return c


def _random_params(model, *example_inputs, seed: int, method=None) -> dict:
    """Random N(0, 0.2) values for every parameter (AdaLN included, so the condition matters).

    Filled with numpy from the parameter shapes rather than by a jitted `model.init`: compiling the
    initialisers costs far more than everything this file tests.
    """
    shapes = jax.eval_shape(functools.partial(model.init, method=method), jax.random.PRNGKey(0),
                            *example_inputs)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes)


def _models(config):
    ae_model = make_autoencoder(config.model, STATE_DIM, ACTION_DIM, HORIZON)
    tf_model = make_transformer(config.model, STATE_DIM)
    ae_params = _random_params(ae_model, jnp.zeros((1, HORIZON, 1 + STATE_DIM)), seed=1)
    tf_params = _random_params(tf_model, jnp.zeros((1, 1 + STATE_DIM)),
                               jnp.zeros((1, sum(SCALES) - SCALES[0], config.model.code_dim)), seed=2,
                               method=NextScaleTransformer.init_all)
    return ae_model, tf_model, ae_params, tf_params


@pytest.fixture(scope="module")
def tiny():
    config = _tiny_config()
    ae_model, tf_model, ae_params, tf_params = _models(config)
    cond = jax.random.normal(jax.random.PRNGKey(3), (BATCH, 1 + STATE_DIM))
    return config, ae_model, tf_model, ae_params, tf_params, cond


@functools.cache
def _sample_and_reference(tf_model, ae_model, **options):
    """jit: (trace of the KV-cached sampler, teacher-forced full-forward logits of its tokens)."""
    reference_options = {k: v for k, v in options.items() if k in ("cfg_scale", "cfg_ramp", "guided")}

    @jax.jit
    def run(tf_params, ae_params, cond, key):
        trace = sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, key, **options)
        full = full_forward_logits(tf_model, ae_model, tf_params, ae_params, cond, trace.tokens,
                                   **reference_options)
        return trace, full

    return run


CONDITIONAL = dict(cfg_scale=0.0)
# Guidance 0 at scale 1, growing to 1.5 at scale K; greedy (top_k=1), which shares this compiled
# program with the determinism test (compiles dominate this file's runtime).
GREEDY_RAMPED_CFG = dict(cfg_scale=1.5, cfg_ramp=True, top_k=1)


def _assert_logits_match_per_scale(trace, full):
    start = 0
    for k, logits in enumerate(trace.logits):
        assert logits.shape == (BATCH, SCALES[k], VOCAB)
        np.testing.assert_allclose(logits, full[:, start:start + SCALES[k]], atol=1e-4, rtol=1e-4,
                                   err_msg=f"scale {k + 1}")
        start += SCALES[k]


@pytest.mark.parametrize("options", [CONDITIONAL, GREEDY_RAMPED_CFG], ids=["conditional", "cfg_ramp"])
def test_kv_cached_sampling_logits_equal_the_teacher_forced_forward(tiny, options):
    _, ae_model, tf_model, ae_params, tf_params, cond = tiny
    trace, full = _sample_and_reference(tf_model, ae_model, **options)(
        tf_params, ae_params, cond, jax.random.PRNGKey(0))
    assert full.shape == (BATCH, sum(SCALES), VOCAB)
    _assert_logits_match_per_scale(trace, full)
    # The conditions matter (so the AdaLN path is really compared), and f_hat is the autoencoder's
    # own sum of the sampled codes.
    assert float(jnp.std(trace.logits[0][:, 0] - trace.logits[0][:1, 0])) > 1e-3
    np.testing.assert_allclose(trace.f_hat, ae_model.apply(ae_params, list(trace.tokens),
                                                           method="tokens_to_f_hat"), atol=1e-5)


def test_guidance_strength_zero_equals_the_conditional_model(tiny):
    _, ae_model, tf_model, ae_params, tf_params, cond = tiny
    key = jax.random.PRNGKey(0)
    plain, _ = _sample_and_reference(tf_model, ae_model, **CONDITIONAL)(tf_params, ae_params, cond, key)
    guided, _ = _sample_and_reference(tf_model, ae_model, cfg_scale=0.0, guided=True)(
        tf_params, ae_params, cond, key)
    for a, b in zip(guided.logits, plain.logits, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(guided.tokens, plain.tokens, strict=True):
        np.testing.assert_array_equal(a, b)
    # The ramp has strength 0 at scale 1, so its first logits are the conditional model's too.
    ramped, _ = _sample_and_reference(tf_model, ae_model, **GREEDY_RAMPED_CFG)(
        tf_params, ae_params, cond, key)
    np.testing.assert_allclose(ramped.logits[0], plain.logits[0], atol=1e-5)


def test_top_k_one_is_greedy_and_deterministic_across_keys(tiny):
    _, ae_model, tf_model, ae_params, tf_params, cond = tiny
    greedy = _sample_and_reference(tf_model, ae_model, **GREEDY_RAMPED_CFG)
    trace_a, full = greedy(tf_params, ae_params, cond, jax.random.PRNGKey(0))
    trace_b, _ = greedy(tf_params, ae_params, cond, jax.random.PRNGKey(123))
    for a, b in zip(trace_a.tokens, trace_b.tokens, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(trace_a.f_hat, trace_b.f_hat)
    # Every token is the argmax of its guided logits (the full forward agrees: CFG is applied there too).
    _assert_logits_match_per_scale(trace_a, full)
    for tokens, logits in zip(trace_a.tokens, trace_a.logits, strict=True):
        np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))
    # Without filtering, different keys give different samples.
    free = _sample_and_reference(tf_model, ae_model, **CONDITIONAL)
    t1, t2 = (free(tf_params, ae_params, cond, jax.random.PRNGKey(i))[0].tokens for i in (1, 2))
    assert any(bool(jnp.any(a != b)) for a, b in zip(t1, t2, strict=True))


def test_forced_scales_take_the_given_tokens_and_sample_the_rest(tiny):
    _, ae_model, tf_model, ae_params, tf_params, cond = tiny
    given = _sample_and_reference(tf_model, ae_model, **CONDITIONAL)(
        tf_params, ae_params, cond, jax.random.PRNGKey(7))[0]

    @jax.jit
    def forced_two(tf_params, ae_params, cond, key):
        trace = sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, key, **CONDITIONAL,
                                  forced_tokens=given.tokens[:2])
        return trace, full_forward_logits(tf_model, ae_model, tf_params, ae_params, cond, trace.tokens)

    forced, full = forced_two(tf_params, ae_params, cond, jax.random.PRNGKey(8))
    for k in (0, 1):
        np.testing.assert_array_equal(forced.tokens[k], given.tokens[k], err_msg=f"scale {k + 1}")
    # The last scale is sampled from logits conditioned on the forced scales (the cache holds them),
    # and f_hat is the autoencoder's sum of the resulting tokens.
    _assert_logits_match_per_scale(forced, full)
    np.testing.assert_allclose(forced.f_hat, ae_model.apply(ae_params, list(forced.tokens),
                                                            method="tokens_to_f_hat"), atol=1e-5)


def test_top_k_keeps_the_k_largest_logits():
    logits = jnp.array([[0.1, 2.0, -1.0, 3.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    kept = np.isfinite(np.asarray(filter_logits(logits, top_k=2)))
    np.testing.assert_array_equal(kept, [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_k=0)), True)  # 0 = off
    np.testing.assert_allclose(filter_logits(logits, top_k=2)[0, 3], 3.0)  # kept values unchanged


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = jnp.array([[0.5, 0.05, 0.3, 0.15], [0.97, 0.01, 0.01, 0.01]])
    logits = jnp.log(probs)
    # Sorted masses 0.5, 0.3, 0.15, 0.05: p=0.7 needs {0.5, 0.3}; p=0.85 needs {0.5, 0.3, 0.15}.
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_p=0.7)),
                                  [[1, 0, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_p=0.85)),
                                  [[1, 0, 1, 1], [1, 0, 0, 0]])
    # p tiny keeps the single most likely code; combined with top-k the stricter one wins.
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_p=1e-6)).sum(-1), [1, 1])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_k=3, top_p=0.85)),
                                  [[1, 0, 1, 1], [1, 0, 0, 0]])


def test_bad_sampling_options_fail_clearly(tiny):
    _, ae_model, tf_model, ae_params, tf_params, cond = tiny
    with pytest.raises(ValueError, match="top_k"):
        sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, jax.random.PRNGKey(0),
                          top_k=999)
    with pytest.raises(ValueError, match="temperature"):
        sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, jax.random.PRNGKey(0),
                          temperature=0.0)


def _policy_inputs(n=8, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    observations = 3.0 + 2.0 * jax.random.normal(k1, (n, STATE_DIM))
    returns = jax.random.uniform(k2, (n,), minval=0.0, maxval=10.0)
    return observations, returns


def test_act_returns_clipped_finite_actions_for_a_batch(tiny):
    config, ae_model, tf_model, ae_params, tf_params, _ = tiny
    stats = NormStats(np.full(STATE_DIM, 3.0), np.full(STATE_DIM, 2.0))
    low, high = np.array([-0.01, -0.02]), np.array([0.01, 0.005])
    act = make_policy(config, ae_model, tf_model, stats, low, high)
    params = {"autoencoder": ae_params, "transformer": tf_params}
    observations, returns = _policy_inputs()
    actions = np.asarray(act(params, observations, returns, jax.random.PRNGKey(0)))
    assert actions.shape == (8, ACTION_DIM)
    assert np.all(np.isfinite(actions))
    assert np.all(actions >= low) and np.all(actions <= high)
    # The bounds are tight enough that clipping really happens.
    assert np.any(np.isclose(actions, low)) or np.any(np.isclose(actions, high))


def test_act_with_action_chunks_returns_n_actions_per_seed(tiny):
    _, _, tf_model, _, tf_params, _ = tiny
    config = _tiny_config(action_horizon=4)
    config.eval.action_chunk = 3
    ae_model, _, ae_params, _ = _models(config)
    stats = NormStats(np.zeros(STATE_DIM), np.ones(STATE_DIM))
    act = make_policy(config, ae_model, tf_model, stats, -1.0, 1.0)
    observations, returns = _policy_inputs(n=6, seed=1)
    actions = act({"autoencoder": ae_params, "transformer": tf_params}, observations, returns,
                  jax.random.PRNGKey(0))
    assert actions.shape == (6, 3, ACTION_DIM)
    assert bool(jnp.all(jnp.isfinite(actions))) and bool(jnp.all(jnp.abs(actions) <= 1.0))
    assert len(np.unique(np.asarray(actions).round(6))) > 2  # not all clipped to the bounds
    config.eval.action_chunk = 5  # more than model.action_horizon
    with pytest.raises(ValueError, match="action_chunk"):
        make_policy(config, ae_model, tf_model, stats, -1.0, 1.0)


def _segment_batch(batch=8, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    states = jax.random.normal(k1, (batch, HORIZON, STATE_DIM))
    rtg = jax.random.uniform(k2, (batch, HORIZON))
    actions = jax.random.uniform(k3, (batch, HORIZON, ACTION_DIM), minval=-1, maxval=1)
    mask = jnp.ones((batch, HORIZON))
    return {"segments": jnp.concatenate([rtg[..., None], states], -1), "actions": actions,
            "mask": mask, "states": states, "returns_to_go": rtg, "first_action": actions[:, 0]}


def _stage2_losses(config, ae_model, ae_params):
    # A one-block transformer: compiling the update dominates, and one block is enough to learn.
    config.model.tf_depth = 1
    tf_model = make_transformer(config.model, STATE_DIM)
    tf_params = _random_params(tf_model, jnp.zeros((1, 1 + STATE_DIM)),
                               jnp.zeros((1, sum(SCALES) - SCALES[0], config.model.code_dim)), seed=4,
                               method=NextScaleTransformer.init_all)
    state = Stage2State.create(apply_fn=tf_model.apply, params=tf_params,
                               tx=make_optimizer(config.stage2))
    step = jax.jit(make_stage2_step(config, ae_model, ae_params))
    batch, key = _segment_batch(), jax.random.PRNGKey(12)
    state, before = step(state, batch, key)
    _, after = step(state, batch, key)  # same batch and key: same condition-dropout rows
    return before, after


def test_one_stage2_update_lowers_the_loss_and_reports_the_end_to_end_terms(tiny):
    # One program for both checks: the gumbel_e2e step is the plain step (teacher-forced CE with
    # condition dropout, AdamW) plus L_cond and L_inv, and compiling it dominates this file's runtime.
    # The plain step (gumbel_e2e=False) runs end to end in test_launcher.py's quicktest run.
    _, ae_model, _, ae_params, _, _ = tiny
    config = _tiny_config()
    config.stage2.gumbel_e2e = True
    before, after = _stage2_losses(config, ae_model, ae_params)
    for name in ("loss", "loss_ce", "loss_cond", "loss_inv", "loss_return"):
        assert np.isfinite(float(before[name])), name
    assert float(before["loss_cond"]) > 0 and float(before["loss_inv"]) > 0
    total = before["loss_ce"] + config.stage2.lambda_cond * before["loss_cond"] \
        + config.stage2.lambda_inv * before["loss_inv"] \
        + config.stage2.lambda_return * before["loss_return"]
    np.testing.assert_allclose(before["loss"], total, rtol=1e-5)
    assert float(after["loss"]) < float(before["loss"])


def test_act_reads_the_stage3_head_when_given(tiny):
    config, ae_model, tf_model, ae_params, tf_params, _ = tiny
    stats = NormStats(np.zeros(STATE_DIM), np.ones(STATE_DIM))
    act = make_policy(config, ae_model, tf_model, stats, -10.0, 10.0)
    observations, returns = _policy_inputs(n=4, seed=2)
    key = jax.random.PRNGKey(0)
    params = {"autoencoder": ae_params, "transformer": tf_params}
    stage1 = np.asarray(act(params, observations, returns, key))
    own_head = inverse_head_params(ae_params)
    np.testing.assert_allclose(act({**params, "head": own_head}, observations, returns, key), stage1,
                               atol=1e-6)
    other_head = jax.tree.map(lambda x: x + 0.1, own_head)
    assert np.abs(np.asarray(act({**params, "head": other_head}, observations, returns, key))
                  - stage1).max() > 1e-3


@pytest.mark.parametrize("true_scales", [0, 2], ids=["sampled_plans", "true_coarse_scales"])
def test_head_updates_on_generated_plans_lower_the_action_error(tiny, true_scales):
    config, ae_model, tf_model, ae_params, tf_params, _ = tiny
    config = _tiny_config()
    config.head.update(warmup_steps=0, lr_schedule="constant", lr=3e-3, true_scales=true_scales)
    state = create_head_state(config, ae_params)
    step = jax.jit(make_head_step(config, ae_model, tf_model, ae_params, tf_params))
    batch, key = _segment_batch(), jax.random.PRNGKey(5)
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch, key)
        losses.append(float(metrics["loss"]))
    assert losses[2] < losses[0], losses
    # Stage 1's head is a separate copy: training the acting head leaves it as it was.
    for a, b in zip(jax.tree.leaves(inverse_head_params(ae_params)), jax.tree.leaves(state.params),
                    strict=True):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0


def test_acting_path_metrics_compare_true_and_sampled_plans(tiny):
    config, ae_model, tf_model, ae_params, tf_params, _ = tiny
    batch = _segment_batch(seed=3)
    metrics = jax.jit(lambda head: acting_path_metrics(
        ae_model, tf_model, ae_params, tf_params, batch, jax.random.PRNGKey(0),
        sampling_options(config.sampling), head))(inverse_head_params(ae_params))
    for name in ("action_mse_true_plan", "action_mse_sampled_plan", "plan_start_error",
                 "head_action_mse_sampled_plan"):
        assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name
    # The same head on the same sampled plans gives the same error.
    np.testing.assert_allclose(metrics["head_action_mse_sampled_plan"],
                               metrics["action_mse_sampled_plan"], rtol=1e-5)


def test_learned_target_conditions_on_the_predicted_best_return(tiny):
    config, ae_model, tf_model, ae_params, tf_params, _ = tiny
    stats = NormStats(np.zeros(STATE_DIM), np.ones(STATE_DIM))  # states = observations
    learned = _tiny_config()
    learned.sampling.learned_target = True
    params = {"autoencoder": ae_params, "transformer": tf_params}
    observations, returns = _policy_inputs(n=4, seed=4)
    predicted = tf_model.apply(tf_params, observations, method=NextScaleTransformer.predict_return)
    key = jax.random.PRNGKey(1)
    with_target = make_policy(learned, ae_model, tf_model, stats, -10.0, 10.0)(
        params, observations, returns, key)  # the given returns are ignored
    by_hand = make_policy(config, ae_model, tf_model, stats, -10.0, 10.0)(
        params, observations, predicted * config.data.rtg_scale, key)
    np.testing.assert_allclose(with_target, by_hand, atol=1e-5)


def test_several_plans_act_on_the_best_ending_plan_or_on_the_mean_action(tiny):
    """eval.num_plans = 3: 'best' reads the plan ending in the highest learned value; 'mean' averages
    the head's actions over the three plans."""
    config, ae_model, tf_model, ae_params, tf_params, _ = tiny
    stats = NormStats(np.zeros(STATE_DIM), np.ones(STATE_DIM))  # states = observations
    several = _tiny_config()
    several.eval.num_plans = 3
    params = {"autoencoder": ae_params, "transformer": tf_params}
    observations, returns = _policy_inputs(n=4, seed=5)
    key = jax.random.PRNGKey(2)
    actions = make_policy(several, ae_model, tf_model, stats, -10.0, 10.0)(
        params, observations, returns, key)
    # By hand: the same draws (three rows per seed), decoded; the head reads the best-ending plan.
    cond = jnp.repeat(jnp.concatenate([returns[:, None] / config.data.rtg_scale, observations], -1),
                      3, axis=0)

    @jax.jit  # the sampler run op by op takes seconds
    def plans_and_values(tf_params, ae_params):
        f_hat = sample_with_trace(tf_model, ae_model, tf_params, ae_params, cond, key,
                                  **sampling_options(several.sampling)).f_hat
        ends = ae_model.apply(ae_params, f_hat, cond[:, 0], method="decode")[:, -1, 1:]
        return f_hat, tf_model.apply(tf_params, ends, method=NextScaleTransformer.predict_return)

    f_hat, values = plans_and_values(tf_params, ae_params)
    values = values.reshape(4, 3)
    assert float(jnp.min(jnp.max(values, 1) - jnp.min(values, 1))) > 1e-4  # the choice matters
    assert bool(jnp.any(jnp.argmax(values, 1) != 0))  # and is not always the first draw
    best = f_hat.reshape(4, 3, *f_hat.shape[1:])[jnp.arange(4), jnp.argmax(values, 1)]
    expected = ae_model.apply(ae_params, best, observations, method="inverse_dynamics")[:, 0]
    np.testing.assert_allclose(actions, jnp.clip(expected, -10.0, 10.0), atol=1e-5)

    several.eval.plan_reduce = "mean"
    mean_actions = make_policy(several, ae_model, tf_model, stats, -10.0, 10.0)(
        params, observations, returns, key)
    each = ae_model.apply(ae_params, f_hat, jnp.repeat(observations, 3, axis=0),
                          method="inverse_dynamics")[:, 0]
    each = jnp.clip(each, -10.0, 10.0).reshape(4, 3, -1)
    assert float(jnp.max(jnp.abs(each[:, 0] - each[:, 1]))) > 1e-4  # the plans' actions differ
    np.testing.assert_allclose(mean_actions, each.mean(axis=1), atol=1e-5)


def _segment_data(episodes=3, length=12, seed=0) -> SegmentData:
    """Hand-built padded episodes (the sampler's layout), HORIZON steps of padding."""
    rng = np.random.default_rng(seed)
    total = length + HORIZON
    lengths = np.full(episodes, length, np.int32)
    ends = np.cumsum(lengths).astype(np.int32)
    return SegmentData(
        states=jnp.asarray(rng.normal(size=(episodes, total, STATE_DIM)), jnp.float32),
        returns_to_go=jnp.asarray(rng.uniform(size=(episodes, total)), jnp.float32),
        actions=jnp.asarray(rng.uniform(-1, 1, size=(episodes, total, ACTION_DIM)), jnp.float32),
        lengths=jnp.asarray(lengths), episode_starts=jnp.asarray(ends - lengths),
        episode_ends=jnp.asarray(ends), max_horizon=HORIZON)


def test_plan_buffer_holds_sampled_plans_the_head_learns_from(tiny):
    _, ae_model, tf_model, ae_params, tf_params, _ = tiny
    config = _tiny_config()
    config.head.update(plan_buffer=20, batch_size=2, true_scales=1, warmup_steps=0,
                       lr_schedule="constant", lr=3e-3)  # two sampling calls of 16; the last one cut
    data, key = _segment_data(), jax.random.PRNGKey(7)
    buffer = make_plan_buffer(config, ae_model, tf_model, ae_params, tf_params, data, key)
    plans = jax.device_get(buffer.plans)
    assert plans["f_hat"].shape == (20, SCALES[-1], config.model.code_dim)
    assert plans["s0"].shape == (20, STATE_DIM) and plans["actions"].shape == (20, 1, ACTION_DIM)
    # Each buffered window starts at a real step of the data, with that step's action.
    states = np.asarray(data.states)[:, :12].reshape(-1, STATE_DIM)
    actions = np.asarray(data.actions)[:, :12].reshape(-1, ACTION_DIM)
    rows = [int(np.argmin(np.abs(states - s0).sum(axis=1))) for s0 in plans["s0"]]
    np.testing.assert_allclose(states[rows], plans["s0"], atol=1e-6)
    np.testing.assert_allclose(actions[rows], plans["actions"][:, 0], atol=1e-6)
    assert len(set(rows)) > 5 and len({tuple(f.ravel()[:4]) for f in plans["f_hat"]}) > 5
    # The same key gives the same buffer (a resumed stage 3 rebuilds it exactly).
    again = jax.device_get(make_plan_buffer(config, ae_model, tf_model, ae_params, tf_params, data,
                                            key).plans)
    jax.tree.map(np.testing.assert_array_equal, plans, again)
    # The head's update reads buffered plans as they are, and learns from them.
    state = create_head_state(config, ae_params)
    step = jax.jit(make_head_step(config, ae_model, tf_model, ae_params, tf_params))
    batch = sample_plan_buffer(buffer, jax.random.PRNGKey(1), 8, HORIZON)
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch, jax.random.PRNGKey(5))
        losses.append(float(metrics["loss"]))
    assert losses[2] < losses[0], losses
