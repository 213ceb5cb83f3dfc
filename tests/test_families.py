"""AntMaze, Adroit and locomotion end to end on locally recorded data, and the fixes that took."""

import json
import os

import pytest
from conftest import TEST_SCALES, launch, load_experiment

from mage_jax.data.minari_source import DatasetUnavailableError
from mage_jax.datasets import record
from mage_jax.datasets.env_layouts import env_layout
from mage_jax.datasets.registry import ensure_dataset
from mage_jax.evaluation import envs, scoring
from mage_jax.evaluation.results import format_score_table

OBS_FAMILY = {"antmaze": "antmaze", "adroit": "box", "locomotion": "box"}
# Per family: config, recorded episodes (tiny), the headline metric its eval_results.json must carry.
FAMILIES = {
    "antmaze": ("experiments/antmaze.py:local,quicktest", 2, "d4rl_score"),
    "adroit": ("experiments/adroit.py:pen,local,quicktest", 6, "return"),
    "locomotion": ("experiments/locomotion.py:hopper,local,quicktest", 30, "return"),
}
# Tiny budgets; no held-out validation and no stage-3 head (family-independent, and covered by
# test_launcher.py), so each run compiles only what its family needs.
BUDGET = ["--config.stage1.num_steps=20", "--config.stage2.num_steps=20", "--config.head.acts=False",
        "--config.data.val_fraction=0", "--config.train.log_every=10", "--config.eval.max_steps=10",
        "--config.eval.num_seeds=2", "--config.data.generator_kwargs.ref_episodes=1",
        f"--config.model.scales={TEST_SCALES}"]


@pytest.mark.parametrize("arg", ["antmaze.py:local", "antmaze.py:local,quicktest", "adroit.py:door,local",
                                 "adroit.py:pen,local,cpu", "locomotion.py:walker2d,local",
                                 "locomotion.py:hopper,local,quicktest"])
def test_local_configs_load_what_the_recorder_writes(arg):
    c = load_experiment(f"experiments/{arg}")
    kwargs = c.data.generator_kwargs
    expected = record.default_dataset_id(kwargs.env_id, kwargs.policy)
    if arg.endswith("quicktest"):
        expected = expected.replace("-v0", "-small-v0")  # quicktest records a small copy of its own
    assert (c.data.generator, c.data.dataset_id) == ("record", expected)
    layout = env_layout(kwargs.env_id)
    assert c.data.obs_family == OBS_FAMILY[layout.family]


@pytest.mark.parametrize("arg", ["antmaze.py:medium-play,local", "adroit.py:pen,expert,local",
                                 "locomotion.py:hopper,medium,local"])
def test_local_variants_refuse_a_public_dataset_name(arg):
    with pytest.raises(ValueError, match="local"):
        load_experiment(f"experiments/{arg}")


@pytest.mark.parametrize("arg, alternative", [
    ("antmaze.py:umaze", "experiments/antmaze.py:local"),
    ("adroit.py:door,expert", "experiments/adroit.py:door,local"),
    ("locomotion.py:hopper,medium", "experiments/locomotion.py:hopper,local"),
])
def test_a_missing_public_dataset_names_its_local_variant(arg, alternative):
    with pytest.raises(DatasetUnavailableError, match=alternative):
        ensure_dataset(load_experiment(f"experiments/{arg}").data)  # tests run with HF_HUB_OFFLINE=1


def test_antmaze_needs_the_observation_family_that_keeps_the_ants_position():
    with pytest.raises(ValueError, match="'antmaze'"):
        envs.make_env_spec_from_id("AntMaze_UMaze-v4", obs_family="maze")
    assert envs.make_env_spec_from_id("AntMaze_UMaze-v4", obs_family="antmaze").kwargs == {
        "continuing_task": False}


@pytest.mark.parametrize("family, ref_scores, headline, words", [
    ("antmaze", None, "d4rl_score", "100 x success"),
    ("locomotion", None, "return", "NOT normalised"),
    ("adroit", (-300.0, 3000.0), "normalized_score", "ref_min"),
])
def test_results_label_their_headline(family, ref_scores, headline, words):
    records = [{"seed": 0, "return": 1.0, "length": 5}, {"seed": 1, "return": 3.0, "length": 5}]
    if family != "locomotion":
        for record, success in zip(records, (True, False), strict=True):
            record["success"] = success
    aggregate = scoring.score_episodes(records, family, ref_scores)["aggregate"]
    metric = scoring.headline_metric(aggregate)
    label = scoring.headline_label(metric, family)
    assert metric == headline and words in label
    table = format_score_table({"headline": {"metric": metric, "label": label}, "aggregate": aggregate})
    assert words in table


@pytest.mark.parametrize("family", FAMILIES)
def test_family_quicktest_trains_evaluates_and_scores(tmp_path, family):
    config, episodes, headline = FAMILIES[family]
    workdir = str(tmp_path / family)
    code, out = launch(workdir, *BUDGET, f"--config.data.generator_kwargs.episodes={episodes}",
                       config=config, tiny=False)
    assert code == 0, out[-3000:]
    assert "headline:" in out  # the score table was printed

    with open(os.path.join(workdir, "eval_results.json")) as f:
        results = json.load(f)
    assert results["family"] == family and results["num_seeds"] == 2
    assert results["headline"]["metric"] == headline
    if family == "antmaze":  # 100 x success, from the env's own `success` info
        assert results["env"]["env_kwargs"]["continuing_task"] is False
        for seed in results["per_seed"]:
            assert seed["d4rl_score"] == 100.0 * seed["success"]
    else:  # no ref_max_score for local data: the raw return, said plainly
        assert results["reference_scores"] is None
        assert "NOT normalised" in results["headline"]["label"]
        assert "normalized_score" not in results["aggregate"]
    plots = os.listdir(os.path.join(workdir, "plots"))
    assert f"seed_scores_{headline}.png" in plots
    assert any(p.startswith("learning_curves") for p in plots)
    assert ("plan.png" in plots) == (family == "antmaze")  # maze families draw the plan over the maze
    for stage in ("autoencoder", "transformer"):
        assert "20" in os.listdir(os.path.join(workdir, "checkpoints", stage))
