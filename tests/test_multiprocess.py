"""The accelerator-pod paths on this machine: a mesh of emulated devices, and two processes joined by
`jax.distributed` on localhost (gloo collectives), each launched as a pod worker would be."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from conftest import FAST_COMPILE, REPO, TEST_SCALES, TINY

from mage_jax.config_checks import checkpoint_steps

# Dense reward: every seed's return depends on every action, so equal scores mean equal rollouts.
CONFIG = "experiments/pointmaze.py:local,umaze,dense,quicktest"
# Stage 1 is long enough that a SIGTERM sent at its first checkpoint lands inside the stage.
# Without the acting head and held-out validation (each compiles programs of its own; both run
# multi-process in the same way as the stages kept), so that the test fits CI's budget.
STEPS = ["--config.stage1.num_steps=100", "--config.stage2.num_steps=20",
         "--config.train.checkpoint_every=25", "--config.head.acts=False", "--config.data.val_fraction=0"]
TIMEOUT_S = 600  # a hung collective must fail the test, not CI (250–320 s next to another test worker)


def _env(devices: int) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir: str, devices: int, extra=()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mage_jax.main", f"--config={CONFIG}", f"--workdir={workdir}", *TINY,
           *STEPS, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _start_pair(workdir: str) -> list[subprocess.Popen]:
    address = f"localhost:{_free_port()}"
    return [_start(workdir, 1, [f"--coordinator_address={address}", "--num_processes=2",
                                f"--process_id={i}"]) for i in range(2)]


def _finish(procs: list[subprocess.Popen], deadline: float) -> list[str]:
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        raise AssertionError("a process of the multi-process run hung past the test's timeout") from None
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return outputs


# The checkpoints hold 2-device shardings: compared in a process with two devices. The pair's are
# restored into the reference's tree (its devices have other ids: 0 and 2048 on two hosts).
COMPARE = r"""
import os, sys
import jax, numpy as np, orbax.checkpoint as ocp
reference, pair = sys.argv[1:]
def restore(workdir, stage, target=None):
    path = os.path.join(workdir, "checkpoints", stage)
    with ocp.CheckpointManager(path, item_names=("state", "meta")) as manager:
        step = manager.latest_step()
        args = ocp.args.StandardRestore(target)
        return step, manager.restore(step, args=ocp.args.Composite(state=args)).state
for stage in ("autoencoder", "transformer"):
    ref_step, ref_state = restore(reference, stage)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), ref_state)
    step, state = restore(pair, stage, target)
    assert step == ref_step, (stage, step, ref_step)
    # The same program on the same mesh: equal up to the order of reductions.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(ref_state),
                            strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{stage} {jax.tree_util.keystr(path)}")
print("SAME")
"""


def test_two_processes_resume_and_evaluate_to_the_one_process_result(tmp_path):
    deadline = time.monotonic() + TIMEOUT_S
    reference, pair = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
    # One process with two devices (the same global batch over the same two-device mesh), uninterrupted.
    _finish([_start(reference, devices=2)], deadline)

    # Two processes of one device each, preempted by SIGTERM to both (as a pod's maintenance event
    # does), then relaunched.
    procs = _start_pair(pair)
    while not checkpoint_steps(pair, "autoencoder") and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
        time.sleep(0.1)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    outputs = _finish(procs, deadline)
    assert all("SIGTERM at step" in out for out in outputs), outputs[0][-2000:]
    stopped = checkpoint_steps(pair, "autoencoder")[-1]
    assert stopped < 100 and not checkpoint_steps(pair, "transformer")
    outputs = _finish(_start_pair(pair), deadline)

    assert f"restored step {stopped}" in outputs[0]
    compare = subprocess.run([sys.executable, "-c", COMPARE, reference, pair], cwd=REPO, env=_env(2),
                             capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert "SAME" in compare.stdout
    # Results, metrics and plots are written once, by process 0, and agree with the reference.
    with open(os.path.join(pair, "eval_results.json")) as f, \
            open(os.path.join(reference, "eval_results.json")) as g:
        seeds, ref_seeds = json.load(f)["per_seed"], json.load(g)["per_seed"]
    assert [s["seed"] for s in seeds] == [s["seed"] for s in ref_seeds]
    np.testing.assert_allclose([s["return"] for s in seeds], [s["return"] for s in ref_seeds], rtol=1e-4)
    assert "results:" in outputs[0] and "results:" not in outputs[1]
    with open(os.path.join(pair, "metrics.jsonl")) as f:
        keys = [(r["stage"], r["step"]) for r in map(json.loads, f)]
    assert len(keys) == len(set(keys)), "a metric was logged twice"
    assert os.path.exists(os.path.join(pair, "plots", "plan.png"))


SHARDED_EVAL = r"""
import functools, jax, jax.numpy as jnp, numpy as np
from mage_jax.configs import base_config
from mage_jax.data.normalization import NormStats
from mage_jax.evaluation.policy import make_policy
from mage_jax.evaluation.sharded import shard_policy
from mage_jax.models.autoencoder import make_autoencoder
from mage_jax.models.transformer import NextScaleTransformer, make_transformer
from mage_jax.training import sharding

assert jax.device_count() == 2, jax.devices()
c = base_config()
c.data.horizon = 8
c.model.update(scales=(1, 2, 4), hidden_channels=16, num_res_blocks=1, downsample=2, code_dim=8,
               vocab_size=32, inv_hidden=32, inv_layers=1, tf_depth=2, tf_width=32, tf_heads=2)
ae, tf = make_autoencoder(c.model, 4, 2, 8), make_transformer(c.model, 4)
rng = np.random.default_rng(0)
def random_params(model, *inputs, method=None):
    shapes = jax.eval_shape(functools.partial(model.init, method=method), jax.random.PRNGKey(0), *inputs)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), s.dtype), shapes)
params = {"autoencoder": random_params(ae, jnp.zeros((1, 8, 5))),
          "transformer": random_params(tf, jnp.zeros((1, 5)), jnp.zeros((1, 6, 8)),
                                       method=NextScaleTransformer.init_all)}
act = make_policy(c, ae, tf, NormStats(np.zeros(4), np.ones(4)), -1.0, 1.0)
one, two = (sharding.make_data_mesh(d) for d in (jax.devices()[:1], jax.devices()))
obs = rng.normal(size=(6, 4)).astype(np.float32)
rtg = rng.uniform(0, 5, size=6).astype(np.float32)
key = jax.random.PRNGKey(7)
single = np.asarray(act(params, obs, rtg, key))
on_two = shard_policy(act, params, two)
np.testing.assert_allclose(on_two(obs, rtg, key), single, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(shard_policy(act, params, one)(obs, rtg, key), single, rtol=1e-5, atol=1e-6)
# Observations and returns are split over the two devices in the compiled program.
batch = sharding.batch_sharded(two)
lowered = on_two.jitted.lower(params, jax.device_put(obs, batch), jax.device_put(rtg, batch), key)
shardings = lowered.compile().input_shardings[0]
assert all(s.is_equivalent_to(batch, 2) for s in shardings[1:3]), shardings
# Five seeds on two devices: padded to six, the extra actions dropped.
assert on_two(obs[:5], rtg[:5], key).shape == (5, 2)
print("SAME")
"""


def test_evaluation_act_is_sharded_over_devices_and_equals_one_device():
    proc = subprocess.run([sys.executable, "-c", SHARDED_EVAL], cwd=REPO, env=_env(2),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SAME" in proc.stdout


TWO_DEVICES = r"""
import jax, numpy as np
from mage_jax.configs import apply_size, base_config
from mage_jax.training import sharding
from mage_jax.training.loop import make_multi_step
from mage_jax.training.stage1 import create_stage1_state, make_stage1_step
from mage_jax.data import episodes_from_lists, compute_norm_stats, make_segment_data

assert jax.device_count() == 2, jax.devices()
rng = np.random.default_rng(0)
eps = episodes_from_lists([rng.normal(size=(50, 3)) for _ in range(4)],
                          [rng.uniform(-1, 1, size=(50, 2)) for _ in range(4)],
                          [rng.normal(size=50) for _ in range(4)])
c = apply_size(base_config(), "quicktest")
c.model.scales = TEST_SCALES  # the tests' five scales: a smaller program to compile four times
results = []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_data_mesh(devices)
    data = make_segment_data(eps, compute_norm_stats(eps), max_horizon=32, sharding=sharding.replicated(mesh))
    state = jax.jit(lambda: create_stage1_state(c, jax.random.PRNGKey(0), 3, 2),
                    out_shardings=sharding.replicated(mesh))()
    step = make_multi_step(make_stage1_step(c), 32, 32, 3, mesh, jax.tree.map(lambda x: x.sharding, state))
    state, _ = step(state, data, jax.random.PRNGKey(1))
    results.append(jax.tree.leaves(jax.device_get(state.params)))
for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)

# Two training seeds stacked (train.num_seeds = 2): on one device, and split over the two devices'
# `seed` axis (each seed's batch split over `data` is the case above, per seed).
from mage_jax.training import seeds
stacked = []
for devices, seed_shards in ((jax.devices()[:1], 1), (jax.devices(), 2)):
    mesh = sharding.make_data_mesh(devices, seed_shards=seed_shards)
    data = make_segment_data(eps, compute_norm_stats(eps), max_horizon=32, sharding=sharding.replicated(mesh))
    where = seeds.state_sharding(mesh, True)
    keys = seeds.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(5)])
    state = jax.jit(jax.vmap(lambda k: create_stage1_state(c, k, 3, 2)), out_shardings=where)(keys)
    step = make_multi_step(make_stage1_step(c), 32, 32, 3, mesh, jax.tree.map(lambda x: x.sharding, state),
                           stacked=True)
    train_keys = sharding.global_array(np.asarray(seeds.stack([jax.random.PRNGKey(1)] * 2)), where)
    state, _ = step(state, data, train_keys)
    stacked.append(jax.tree.leaves(jax.device_get(state.params)))
for other in stacked[1:]:
    for a, b in zip(stacked[0], other):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
# Seed 0 of the stacked runs is the one-seed run above.
for a, b in zip(results[0], stacked[0]):
    np.testing.assert_allclose(b[0], a, rtol=2e-5, atol=2e-6)
print("SAME", len(results[0]))
"""


def test_two_emulated_devices_give_the_single_device_parameters():
    """Batch split over the devices, and two stacked training seeds split over them."""
    script = f"TEST_SCALES = {TEST_SCALES}\n{TWO_DEVICES}"
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_env(2), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SAME" in proc.stdout
