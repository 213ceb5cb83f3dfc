"""The paths GPU/TPU runs take, checked on CPU: scanned updates (`train.scan_updates`) give the
dispatched updates' result without any host round-trip, bfloat16 compute (`model.dtype`, 'auto' on
accelerators) trains the transformer and acts, and a stage compiles the same few programs whatever
its number of steps.

Stage 1 runs at a tiny size (horizon 8, three scales); the compiles dominate this file's runtime.
"""

import collections
import contextlib
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TEST_SCALES

from mage_jax import config_checks
from mage_jax.configs import apply_size, base_config
from mage_jax.data import NormStats, compute_norm_stats, episodes_from_lists, make_segment_data
from mage_jax.data.sampler import sample_segments
from mage_jax.evaluation.policy import make_policy
from mage_jax.models import transformer as transformer_lib
from mage_jax.models.autoencoder import init_autoencoder_params, make_autoencoder
from mage_jax.training import loop, sharding, validation
from mage_jax.training.checkpoints import StageCheckpointer, config_to_json
from mage_jax.training.metrics_writer import MetricsWriter
from mage_jax.training.stage1 import create_stage1_state, make_stage1_step
from mage_jax.training.stage2 import create_stage2_state, make_stage2_step

STATE_DIM, ACTION_DIM = 3, 2
HORIZON, BATCH = 8, 8
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch.BACKEND_COMPILE_EVENT


def _episodes(num=4, length=50, seed=0):
    rng = np.random.default_rng(seed)
    return episodes_from_lists([rng.normal(size=(length, STATE_DIM)) for _ in range(num)],
                               [rng.uniform(-1, 1, size=(length, ACTION_DIM)) for _ in range(num)],
                               [rng.normal(size=length) for _ in range(num)])


@dataclasses.dataclass
class Stage1:
    config: object
    mesh: object
    data: object
    val_batch: dict
    fresh_state: Callable  # () -> a replicated Stage1State in new buffers (the updates donate them)
    step_fn: Callable


@pytest.fixture(scope="module")
def stage1() -> Stage1:
    c = base_config()
    c.data.horizon = HORIZON
    c.model.update(scales=(1, 2, 4), hidden_channels=16, num_res_blocks=1, downsample=2, code_dim=8,
                   vocab_size=32, inv_hidden=32, inv_layers=1)
    c.stage1.update(batch_size=BATCH, warmup_steps=2, lr=1e-3)
    mesh = sharding.make_data_mesh()
    episodes = _episodes()
    data = make_segment_data(episodes, compute_norm_stats(episodes), max_horizon=HORIZON,
                             sharding=sharding.replicated(mesh))
    init = jax.jit(lambda: create_stage1_state(c, jax.random.PRNGKey(0), STATE_DIM, ACTION_DIM),
                   out_shardings=sharding.replicated(mesh))
    return Stage1(c, mesh, data, validation.held_out_batch(data, 16, HORIZON, 0), init,
                  make_stage1_step(c))


# ----- config values --------------------------------------------------------------------------------
def test_scan_modes_and_auto_dtype_resolve_per_backend(monkeypatch):
    # check_config keeps its own copies of the allowed values (it runs before JAX is imported).
    assert config_checks._SCAN_MODES == loop.SCAN_MODES
    assert config_checks._DTYPES == transformer_lib.COMPUTE_DTYPES
    assert base_config().train.scan_updates == "auto" and base_config().model.dtype == "auto"

    model_config = apply_size(base_config(), "quicktest").model
    assert jax.default_backend() == "cpu"
    assert not loop.scans_updates("auto") and loop.scans_updates("always")
    assert not loop.scans_updates("never")
    assert transformer_lib.make_transformer(model_config, STATE_DIM).dtype == jnp.float32
    model_config.dtype = "bfloat16"  # forced, on any backend
    assert transformer_lib.make_transformer(model_config, STATE_DIM).dtype == jnp.bfloat16
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert loop.scans_updates("auto") and not loop.scans_updates("never")
        assert transformer_lib.compute_dtype("auto") == jnp.bfloat16
        assert transformer_lib.compute_dtype("float32") == jnp.float32
    with pytest.raises(ValueError, match="always"):
        loop.scans_updates("sometimes")
    with pytest.raises(ValueError, match="bfloat16"):
        transformer_lib.compute_dtype("bf16")

    config = base_config()
    config.data.dataset_id = "D4RL/kitchen/mixed-v2"
    config.train.scan_updates = "yes"
    with pytest.raises(config_checks.UsageError,
                       match=r"config.train.scan_updates='yes' must be one of: 'auto', 'always', 'never'"):
        config_checks.check_config(config)
    config.train.scan_updates, config.model.dtype = "never", "half"
    with pytest.raises(config_checks.UsageError, match=r"config.model.dtype='half' must be one of: 'auto'"):
        config_checks.check_config(config)


# ----- scanned vs dispatched updates ---------------------------------------------------------------
def test_scanned_updates_equal_dispatched_updates(stage1):
    key = jax.random.PRNGKey(1)
    results = {}
    for mode in ("always", "never"):
        state = stage1.fresh_state()
        multi = loop.make_multi_step(stage1.step_fn, BATCH, HORIZON, 3, stage1.mesh,
                                     jax.tree.map(lambda x: x.sharding, state), scan_updates=mode)
        if mode == "always":
            # One device program: a while loop, and nothing in it calls back to the host.
            hlo = multi.lower(state, stage1.data, key).as_text()
            assert "stablehlo.while" in hlo and "callback" not in hlo.lower()
        metrics = []
        with jax.transfer_guard("disallow"):  # no implicit host<->device copies in either mode
            for _ in range(2):  # 6 updates in 2 calls of 3
                state, m = multi(state, stage1.data, key)
                metrics.append(jax.device_get(m))
        assert int(state.step) == 6
        metrics = jax.tree.map(lambda *xs: np.concatenate(xs), *metrics)
        results[mode] = jax.device_get(state.params), metrics, np.asarray(state.code_usage)
    (scan_params, scan_metrics, scan_usage), (params, metrics, usage) = results["always"], results["never"]
    assert set(scan_metrics) == set(metrics)
    # Same batches, keys and arithmetic; only XLA's fusion differs (the update body inside a while
    # loop vs a program of its own), so float32 results differ in the last bit. Measured after 6
    # updates: parameters at most 1.2e-7 apart (one ulp at 1.0; 6 of 67 leaves bitwise equal),
    # metrics at most 1.5e-7 relative (grad_norm 250 +- 3.8e-6). The tolerance leaves ~8x margin.
    tolerance = dict(rtol=1e-6, atol=1e-7)
    for name in metrics:
        assert scan_metrics[name].shape == metrics[name].shape == (6, *np.shape(metrics[name][0]))
        np.testing.assert_allclose(scan_metrics[name], metrics[name], **tolerance, err_msg=name)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(scan_params), jax.tree.leaves(params),
                            strict=True):
        np.testing.assert_allclose(a, b, **tolerance, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(scan_usage, usage, **tolerance)


# ----- compilations per stage -----------------------------------------------------------------------
@contextlib.contextmanager
def _counting_compiles():
    """Counts backend compilations by program name. The event wraps `compile_or_get_cached`, so a
    program loaded from the persistent compilation cache (conftest) still counts: what matters is
    that JAX asked for it again."""
    counts = collections.Counter()

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            counts[kwargs.get("fun_name", "?")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("scan_updates", ["always", "never"])
def test_a_stage_compiles_the_same_few_programs_whatever_its_length(stage1, tmp_path, scan_updates):
    ae_model = make_autoencoder(stage1.config.model, STATE_DIM, ACTION_DIM, HORIZON)
    meta = {"config": config_to_json(stage1.config)}
    key = jax.random.PRNGKey(1)
    compiled = {}
    calls = []  # (step before, step after) of each call, as the periodic evaluation sees them

    def record(previous, step, _):
        calls.append((previous, step))

    for num_steps in (7, 13):  # calls of 3 updates and a tail of 1; 2 and 4 full calls
        state = stage1.fresh_state()
        validate = validation.autoencoder_validation(ae_model, stage1.val_batch)  # a new jit each run
        workdir = tmp_path / f"{num_steps}"
        checkpointer, writer = StageCheckpointer(str(workdir), "autoencoder"), MetricsWriter(str(workdir))
        # Validation and checkpoints after every other call, logs after every call.
        run = loop.StageRun("autoencoder", num_steps, BATCH, HORIZON, steps_per_call=3, log_every=3,
                            checkpoint_every=6, val_every=6, scan_updates=scan_updates)
        calls.clear()
        with _counting_compiles() as counts:
            state = loop.run_stage(run, state, stage1.step_fn, stage1.data, key, stage1.mesh,
                                   checkpointer, meta, writer, validate=validate, on_call_end=record)
        checkpointer.close()
        writer.close()
        assert int(state.step) == num_steps
        ends = [*range(3, num_steps, 3), num_steps]
        assert calls == list(zip([0, *ends[:-1]], ends, strict=True)), calls
        compiled[num_steps] = dict(counts)
    # Scanned: one program per call size (3 and the tail's 1). Dispatched: the single update, shared
    # by the tail. Plus the validation metrics, compiled once and reused at every validation.
    # Checkpointing, logging and the loss check compile nothing.
    updates = {"jit(scanned_updates)": 2} if scan_updates == "always" else {"jit(update)": 1}
    expected = {**updates, "jit(metrics)": 1}
    assert compiled[7] == expected, compiled
    assert compiled[13] == expected, compiled


# ----- bfloat16 compute -----------------------------------------------------------------------------
def test_bfloat16_transformer_trains_and_acts_on_cpu():
    config = apply_size(base_config(), "quicktest")
    config.model.update(dtype="bfloat16", scales=TEST_SCALES)  # five scales: fewer passes to compile
    horizon, batch_size = config.data.horizon, config.stage2.batch_size
    ae_model = make_autoencoder(config.model, STATE_DIM, ACTION_DIM, horizon)
    ae_params = init_autoencoder_params(ae_model, jax.random.PRNGKey(0))  # stays float32
    tf_model = transformer_lib.make_transformer(config.model, STATE_DIM)
    assert tf_model.dtype == jnp.bfloat16
    state = create_stage2_state(config, jax.random.PRNGKey(1), STATE_DIM)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))

    episodes = _episodes(num=8, length=80)
    stats = compute_norm_stats(episodes)
    data = make_segment_data(episodes, stats, max_horizon=horizon)
    batch = jax.jit(sample_segments, static_argnums=(2, 3))(data, jax.random.PRNGKey(2), batch_size,
                                                            horizon)
    step = jax.jit(make_stage2_step(config, ae_model, ae_params), donate_argnums=0)
    losses = []
    for i in range(40):  # one fixed batch, so the token cross-entropy must fall
        state, metrics = step(state, batch, jax.random.PRNGKey(100 + i))
        losses.append(metrics["loss_ce"])
    losses = np.asarray(jax.device_get(losses))
    assert losses.dtype == np.float32 and np.all(np.isfinite(losses)), losses
    # Measured: 4.87 (= log 128, uniform) at the first step, 2.69 over the last five.
    assert losses[-5:].mean() < 0.7 * losses[0], losses

    low, high = np.array([-0.5, -0.2]), np.array([0.5, 0.3])
    act = make_policy(config, ae_model, tf_model, NormStats(stats.state_mean, stats.state_std), low, high)
    observations = jnp.asarray(np.random.default_rng(3).normal(size=(6, STATE_DIM)), jnp.float32)
    actions = np.asarray(act({"autoencoder": ae_params, "transformer": state.params}, observations,
                             jnp.linspace(0.0, 5.0, 6), jax.random.PRNGKey(4)))
    assert actions.shape == (6, ACTION_DIM) and actions.dtype == np.float32
    assert np.all(np.isfinite(actions)) and np.all(actions >= low) and np.all(actions <= high)

