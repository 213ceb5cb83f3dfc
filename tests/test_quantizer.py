"""Multi-scale residual quantiser: resampling, round trips, losses and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mage_jax.models import quantizer as q

SCALES = (1, 2, 3, 5, 8)
CODE_DIM, VOCAB, BATCH = 6, 32, 4


@pytest.fixture(scope="module")
def quant():
    module = q.MultiScaleQuantizer(SCALES, VOCAB, CODE_DIM)
    f = jax.random.normal(jax.random.PRNGKey(0), (BATCH, SCALES[-1], CODE_DIM))
    params = jax.jit(module.init)(jax.random.PRNGKey(1), f)  # op by op it takes seconds
    # A codebook on the scale of f, so the nearest-code choice is not degenerate.
    params = {"params": {**params["params"],
                         "codebook": jax.random.normal(jax.random.PRNGKey(2), (VOCAB, CODE_DIM))}}
    out = jax.jit(module.apply)(params, f)
    return module, params, f, out


def test_area_downsample_is_exact_adaptive_average_pooling():
    x = jnp.arange(7.0)[None, :, None]
    pooled = np.asarray(q.area_downsample(x, 3))[0, :, 0]
    # PyTorch's rule: window i is [floor(i*7/3), ceil((i+1)*7/3)) = [0,3), [2,5), [4,7).
    np.testing.assert_allclose(pooled, [1.0, 3.0, 5.0])
    np.testing.assert_allclose(q.area_downsample(x, 7), x)
    assert q.area_matrix(16, 4).sum(axis=1) == pytest.approx(np.ones(4))


def test_linear_upsample_keeps_constants_and_interpolates():
    np.testing.assert_allclose(q.linear_upsample(jnp.ones((1, 3, 2)), 8), np.ones((1, 8, 2)), rtol=1e-6)
    up = np.asarray(q.linear_upsample(jnp.array([[[0.0], [1.0]]]), 4))[0, :, 0]
    np.testing.assert_allclose(up, [0.0, 0.25, 0.75, 1.0])


def test_token_maps_have_the_scale_lengths_and_decode_to_the_same_f_hat(quant):
    module, params, f, out = quant
    assert [t.shape for t in out.tokens] == [(BATCH, n) for n in SCALES]
    assert all(t.dtype == jnp.int32 for t in out.tokens)
    rebuilt = module.apply(params, out.tokens, method="tokens_to_f_hat")
    np.testing.assert_allclose(rebuilt, out.f_hat_per_scale[-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.f_hat, out.f_hat_per_scale[-1], rtol=1e-5, atol=1e-5)


def test_the_final_residual_is_what_the_loss_sees(quant):
    module, params, f, out = quant
    np.testing.assert_allclose(out.residual, f - out.f_hat_per_scale[-1], rtol=1e-5, atol=1e-5)
    per_scale = [(1 + module.beta) * jnp.mean(jnp.square(fh - f)) for fh in out.f_hat_per_scale]
    np.testing.assert_allclose(out.vq_loss, np.mean(per_scale), rtol=1e-5)
    np.testing.assert_allclose(per_scale[-1], (1 + module.beta) * jnp.mean(jnp.square(out.residual)),
                               rtol=1e-5)


def test_adding_scales_explains_more_of_the_latent(quant):
    _, _, f, out = quant
    errors = [float(jnp.mean(jnp.square(f - fh))) for fh in out.f_hat_per_scale]
    assert errors[-1] < errors[0] < float(jnp.mean(jnp.square(f)))


def test_straight_through_gradient_reaches_the_encoder_output(quant):
    module, params, f, _ = quant
    weights = jax.random.normal(jax.random.PRNGKey(3), f.shape)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(module.apply(params, x).f_hat * weights)))(f)
    np.testing.assert_allclose(grad, weights, rtol=1e-5)
    # ... and the codebook learns through the VQ loss.
    codebook_grad = jax.jit(jax.grad(lambda p: module.apply(p, f).vq_loss))(params)["params"]["codebook"]
    assert float(jnp.abs(codebook_grad).sum()) > 0


def test_teacher_forcing_inputs_are_the_downsampled_cumulative_f_hat(quant):
    module, params, f, out = quant
    codes = [module.apply(params, t, method="embed") for t in out.tokens]
    inputs = module.apply(params, codes, method="teacher_forcing_inputs")
    assert inputs.shape == (BATCH, sum(SCALES[1:]), CODE_DIM)
    start = 0
    for k in range(1, len(SCALES)):
        expected = q.area_downsample(out.f_hat_per_scale[k - 1], SCALES[k])
        np.testing.assert_allclose(inputs[:, start:start + SCALES[k]], expected, rtol=1e-5, atol=1e-5)
        start += SCALES[k]


def test_phis_are_shared_by_nearest_scale_fraction():
    assert [q.phi_index(k, 8, 4) for k in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert q.phi_index(0, 1, 4) == 0


@pytest.mark.parametrize("scales, match", [((1, 2, 2, 8), "strictly increasing"),
                                           ((1, 2, 4), "must equal the latent length")])
def test_a_bad_scale_schedule_is_a_clear_error(scales, match):
    with pytest.raises(ValueError, match=match):
        q.validate_scales(scales, 8)


def test_code_statistics_count_usage_and_perplexity():
    tokens = (jnp.array([[0, 1], [2, 3]]), jnp.array([[0, 0, 0, 0]]))
    stats = q.code_statistics(tokens, vocab_size=8)
    assert float(stats["code_usage_scale_1"]) == pytest.approx(0.5)
    assert float(stats["perplexity_scale_1"]) == pytest.approx(4.0)
    assert float(stats["perplexity_scale_2"]) == pytest.approx(1.0)
