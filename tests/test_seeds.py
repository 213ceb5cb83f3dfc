"""`train.num_seeds`: several training seeds as one vmapped program.

Seed i of a 3-seed run equals the 1-seed run of seed `config.seed + i` in every stage (BC too); a
3-seed run stopped by SIGTERM after its first checkpoint resumes to the uninterrupted run; a 2-seed
run's results, metrics and plots show each seed and the spread across them. (Seeds split over
emulated devices: test_multiprocess.py's two-device test.)
"""

import json
import os
import signal

import jax
import numpy as np
import pytest
from conftest import QUICKTEST, TEST_SCALES, launch, load_experiment, set_fields

from mage_jax.training import loop, train
from mage_jax.training.checkpoints import StageCheckpointer

FIRST_SEED = 5
TINY_SEEDS = {
    "data.generator_kwargs.steps": 5000, "stage1.num_steps": 20, "stage2.num_steps": 20,
    "head.acts": True, "head.num_steps": 20, "bc.num_steps": 20, "train.steps_per_call": 10,
    "train.log_every": 10, "train.checkpoint_every": 10, "train.val_every": 0, "eval.max_steps": 10,
    "eval.num_seeds": 2, "model.scales": TEST_SCALES,
    "seed": FIRST_SEED, "data.val_fraction": 0.0,  # no held-out metrics: fewer programs to compile
}
# Batched (vmapped) matmuls may round differently from single ones; nothing else may differ.
RTOL, ATOL = 1e-4, 1e-6


def tiny_config(**fields):
    config = load_experiment(QUICKTEST)
    config.unlock()
    return set_fields(config, {**TINY_SEEDS, **fields})


def train_stages(workdir, stages=("autoencoder", "transformer", "head", "bc"), **fields) -> dict:
    """The `stages` of a MAGE run (in order, from the first) and a BC run in `workdir`: {stage: params}."""
    ctx = train.prepare(tiny_config(**fields), str(workdir))
    try:
        out = train.run_stages(ctx, stages, trained=stages)
    finally:
        ctx.writer.close()
    return jax.device_get({stage: state.params for stage, state in out.items()})


def assert_trees_close(actual, expected, what: str):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected),
                            strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{what}{jax.tree_util.keystr(path)}")


def seed_slice(tree, index: int):
    return jax.tree.map(lambda x: x[index], tree)


@pytest.fixture(scope="module")
def three_seeds_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("three")
    return workdir, train_stages(workdir, **{"train.num_seeds": 3})


@pytest.fixture(scope="module")
def three_seeds(three_seeds_run):
    return three_seeds_run[1]


def test_each_seed_of_a_three_seed_run_equals_its_one_seed_run(three_seeds, tmp_path):
    for index in range(3):
        single = train_stages(tmp_path / f"seed{index}", seed=FIRST_SEED + index)
        for stage, params in single.items():
            assert_trees_close(seed_slice(three_seeds[stage], index), params, f"seed {index} {stage}")
    # The seeds are independent models, not copies.
    first = jax.tree.leaves(three_seeds["transformer"])[0]
    assert not np.allclose(first[0], first[1])


def test_a_preempted_three_seed_run_resumes_to_the_uninterrupted_run(three_seeds, tmp_path,
                                                                     monkeypatch):
    save = StageCheckpointer.save
    sent = []

    def save_then_sigterm(self, step, state, meta):  # SIGTERM right after the first checkpoint
        save(self, step, state, meta)
        if not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(StageCheckpointer, "save", save_then_sigterm)
    with pytest.raises(loop.Preempted):
        train_stages(tmp_path, **{"train.num_seeds": 3})
    assert sent == [10]
    monkeypatch.setattr(StageCheckpointer, "save", save)
    resumed = train_stages(tmp_path, **{"train.num_seeds": 3})
    for stage, params in resumed.items():
        assert_trees_close(params, three_seeds[stage], f"resumed {stage}")


def test_a_warm_started_run_reuses_the_stages_it_is_given(three_seeds_run, tmp_path):
    """`init.autoencoder` and `init.transformer`: stages 1 and 2 are copied from another run (and
    saved as this run's own), and stage 3 trains on them as it did there."""
    source, expected = three_seeds_run
    warm = train_stages(tmp_path, stages=("autoencoder", "transformer", "head"),
                        **{"train.num_seeds": 3, "init.autoencoder": str(source),
                           "init.transformer": str(source)})
    for stage, params in warm.items():
        assert_trees_close(params, expected[stage], f"warm-started {stage}")
    assert os.listdir(tmp_path / "checkpoints" / "transformer") == ["20"]


def test_a_two_seed_bc_run_reports_each_seed_and_the_spread_across_them(tmp_path):
    workdir = str(tmp_path / "bc")
    flags = ["--config.algorithm=bc", "--config.bc.num_steps=20", "--config.train.num_seeds=2",
             "--config.train.val_every=10", "--config.train.checkpoint_every=10"]
    code, out = launch(workdir, *flags)
    assert code == 0, out[-3000:]
    assert "by training seed" in out and "over 2 training seeds" in out and "IQM" in out
    with open(os.path.join(workdir, "eval_results.json")) as f:
        results = json.load(f)
    assert results["training_seeds"] == [0, 1] and results["num_seeds"] == 4
    assert [s["seed"] for s in results["per_training_seed"]] == [0, 1]
    assert all(len(s["per_seed"]) == 4 for s in results["per_training_seed"])
    over = results["over_training_seeds"]
    assert over["n"] == 2 and over["iqm_ci95"][0] <= over["iqm"] <= over["iqm_ci95"][1]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    # Per stage and step: the mean over seeds, then each seed; held-out metrics and scores alike.
    for stage in ("bc", "bc_val", "eval"):
        last = [r for r in records if r["stage"] == stage and r["step"] == 20]
        assert [r.get("seed") for r in last] == [None, 0, 1], stage
    train = [r for r in records if r["stage"] == "bc" and r["step"] == 20]
    assert train[0]["loss"] == pytest.approx((train[1]["loss"] + train[2]["loss"]) / 2)
    assert os.path.exists(os.path.join(workdir, "plots", "learning_curves_bc.png"))
    # A checkpoint of 2 stacked seeds does not resume as one seed.
    code, out = launch(workdir, *flags[:-3], "--mode=eval")
    assert code == 1 and "train.num_seeds: checkpoint 2, this run 1" in out, out[-3000:]
