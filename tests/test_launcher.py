"""The launcher end to end, in subprocesses as a user runs it: a quicktest run trained stage by stage
(every mode, periodic evaluations, results, plots, the diagnosis tool), resume after kills, and that
a quicktest run learns. (Emulated devices and several processes: test_multiprocess.py.)"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import QUICKTEST, REPO, TINY, launch, start

from mage_jax.config_checks import checkpoint_steps

CONFIG = QUICKTEST


def restored_state(workdir, stage="autoencoder"):
    import orbax.checkpoint as ocp

    path = os.path.join(workdir, "checkpoints", stage)
    step = max(checkpoint_steps(workdir, stage))
    with ocp.CheckpointManager(path, item_names=("state", "meta")) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored.state


STEPS = 200  # quicktest's stage budget
# One flag set for every mode of the run trained stage by stage (a checkpoint remembers its config).
# Periodic evaluations every 100 steps: transformer steps 100 and 200 (stage 1's head acts), head
# step 100 (two stages with a step 100, each with its own results file). Umaze acts with stage 1's
# head by default: train stage 3 too.
STAGED = [f"--config.stage1.num_steps={STEPS}", f"--config.stage2.num_steps={STEPS}",
          "--config.head.acts=True", "--config.head.num_steps=100", "--config.train.checkpoint_every=20",
          "--config.train.val_every=50", "--config.train.eval_every=100", "--config.train.steps_per_call=5"]
STAGE1 = ["--mode=train_autoencoder", *STAGED]


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    """`--mode=train_autoencoder`, uninterrupted: the killed runs' reference, and the first stage of
    the run trained stage by stage. Returns (workdir, output)."""
    workdir = str(tmp_path_factory.mktemp("staged") / "run")
    code, out = launch(workdir, *STAGE1)
    assert code == 0, out[-3000:]
    assert checkpoint_steps(workdir, "transformer") == [] and not os.path.exists(
        os.path.join(workdir, "eval_results.json"))
    return workdir, out


def _files(folder) -> dict:
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return found


@pytest.fixture(scope="module")
def staged_run(stage1_run):
    """The same run continued one mode at a time: train_transformer, train_head, eval. Each mode
    trains its own stage only and leaves the earlier stages' checkpoints byte for byte."""
    workdir, _ = stage1_run
    checkpoints = os.path.join(workdir, "checkpoints")
    for mode, stage in (("train_transformer", "transformer"), ("train_head", "head"), ("eval", None)):
        before = _files(checkpoints)
        code, out = launch(workdir, *STAGED, f"--mode={mode}")
        assert code == 0, f"--mode={mode}\n{out[-3000:]}"
        after = _files(checkpoints)
        assert {k: v for k, v in after.items() if k in before} == before, mode  # earlier stages kept
        new = {k.split(os.sep)[0] for k in after.keys() - before.keys()}
        assert new == ({stage} if stage else set()), (mode, new)
        assert os.path.exists(os.path.join(workdir, "eval_results.json")) == (mode == "eval"), mode
    return workdir


def test_stage_modes_write_checkpoints_metrics_config_results_and_plots(stage1_run, staged_run):
    workdir = staged_run
    # Off a terminal the progress bars write plain lines, not carriage-return redraws.
    out = stage1_run[1]
    assert "\r" not in out and f"autoencoder: {STEPS}/{STEPS} step (100%)" in out
    assert checkpoint_steps(workdir, "autoencoder")[-1] == STEPS
    assert checkpoint_steps(workdir, "transformer")[-1] == STEPS
    assert checkpoint_steps(workdir, "head")[-1] == 100
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["dataset_id"] == "local/pointmaze/umaze-small-v1"
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    training = ("autoencoder", "transformer", "head")
    stages = [r["stage"] for r in records]
    assert {*training, "eval", *(f"{s}_val" for s in training)} <= set(stages)
    assert stages.index("autoencoder") < stages.index("transformer") < stages.index("head")
    assert all(np.isfinite(r["loss"]) for r in records if r["stage"] in training)
    # Periodic evaluations at transformer steps 100 and 200 and head step 100, then --mode=eval's
    # (scored at the transformer's step, as the policy's checkpoint step).
    assert [r["step"] for r in records if r["stage"] == "eval"] == [100, 200, 100, 200]
    # Each stage's periodic results keep their own file (both stages have a step 100).
    assert sorted(f for f in os.listdir(workdir) if f.startswith("eval_results_")) == [
        "eval_results_head_100.json", "eval_results_transformer_100.json",
        "eval_results_transformer_200.json"]
    # Held-out metrics of the acting path, including the action error on generated plans.
    val = {r["stage"]: r for r in records if r["stage"].endswith("_val")}
    assert {"action_mse_true_plan", "action_mse_sampled_plan", "plan_start_error",
            "accuracy_scale_1"} <= val["transformer_val"].keys()
    assert np.isfinite(val["head_val"]["action_mse_sampled_plan"])
    with open(os.path.join(workdir, "eval_results.json")) as f:
        results = json.load(f)
    assert results["num_seeds"] == 4 and len(results["per_seed"]) == 4
    assert results["checkpoint_step"] == STEPS
    assert "normalized_score" in results["aggregate"]
    assert os.path.isdir(os.path.join(workdir, "tensorboard"))
    plots = set(os.listdir(os.path.join(workdir, "plots")))
    assert {"plan.png", "learning_curves_transformer_val.png", "seed_scores_normalized_score.png"} <= plots


def test_a_quicktest_run_learns(staged_run):
    """Held-out metrics between the first validation (step 50) and the last (step 200), at quicktest's
    budget. Measured here: stage 1's action error -24%, stage 2's cross-entropy -17% and the action
    error on its generated plans -16%; the margins asked leave room for other platforms."""
    with open(os.path.join(staged_run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]

    def first_and_last(stage, metric):
        values = [(r["step"], r[metric]) for r in records if r["stage"] == f"{stage}_val"]
        assert [step for step, _ in values] == [50, 100, 150, 200], (stage, values)
        return values[0][1], values[-1][1]

    first, last = first_and_last("autoencoder", "action_mse_true_plan")
    assert last < 0.9 * first, (first, last)
    first, last = first_and_last("transformer", "loss_ce")
    assert last < 0.95 * first, (first, last)
    first, last = first_and_last("transformer", "action_mse_sampled_plan")
    assert last < 0.95 * first, (first, last)


def test_diagnose_reads_a_finished_run_and_leaves_its_results(staged_run):
    """`benchmarks/diagnose.py` on the run (all three stages): held-out metrics and a sampling sweep."""
    workdir = staged_run
    with open(os.path.join(workdir, "eval_results.json")) as f:
        results = json.load(f)
    cmd = [sys.executable, "benchmarks/diagnose.py", f"--config={CONFIG}", *TINY, *STAGED,
           f"--workdir={workdir}", "--sweep=sampling.temperature=0.5"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(workdir, "diagnose", "diagnose.json")) as f:
        report = json.load(f)
    assert np.isfinite(report["validation"]["stage-3 head action_mse_sampled_plan"])
    sweep = report["sweeps"]["sampling.temperature=0.5"]
    assert np.isfinite(sweep["score"]["mean"]) and np.isfinite(sweep["val_action_mse_policy"])
    with open(os.path.join(workdir, "eval_results.json")) as f:
        assert json.load(f)["per_seed"] == results["per_seed"]


def _wait_for_checkpoint(proc, workdir, after: int):
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = [s for s in checkpoint_steps(workdir, "autoencoder") if s > after]
        if steps:
            return steps[-1]
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    raise TimeoutError("no checkpoint appeared")


def test_killed_runs_resume_to_the_uninterrupted_result(stage1_run, tmp_path):
    """SIGTERM (saves, exits 0) and SIGKILL (loses the work since the last checkpoint) part-way."""
    reference, interrupted = stage1_run[0], str(tmp_path / "interrupted")

    proc = start(interrupted, *STAGE1)
    first = _wait_for_checkpoint(proc, interrupted, after=0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    stopped_at = max(checkpoint_steps(interrupted, "autoencoder"))
    assert first <= stopped_at < STEPS, "SIGTERM arrived too late to test anything"

    proc = start(interrupted, *STAGE1)
    _wait_for_checkpoint(proc, interrupted, after=stopped_at)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert max(checkpoint_steps(interrupted, "autoencoder")) < STEPS, "SIGKILL arrived too late"

    code, out = launch(interrupted, *STAGE1)
    assert code == 0, out[-3000:]
    ref_step, ref_state = restored_state(reference)
    step, state = restored_state(interrupted)
    assert step == ref_step == STEPS
    ref_leaves, leaves = _leaves(ref_state["params"]), _leaves(state["params"])
    assert ref_leaves.keys() == leaves.keys()
    for name in ref_leaves:
        np.testing.assert_allclose(leaves[name], ref_leaves[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _leaves(tree):
    import jax

    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
