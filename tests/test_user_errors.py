"""Every user mistake: a non-zero exit and one clear line, no traceback, and the earlier run untouched.

Flag parsing, a representative rule of each tier of `config_checks` and the problems found while running
are launched as a user runs them (subprocesses of the launcher) against one tiny trained run, two at a
time since most fail within a second: the point is that they fail before any work. Every other config
rule is checked in process, on the config the launcher would load: the same message, without the
second of start-up per case.
"""

import concurrent.futures
import hashlib
import json
import os
import shutil

import pytest
from conftest import QUICKTEST, REPO, launch, load_experiment, set_fields

from mage_jax import config_checks, configs

BC = ["--config.algorithm=bc", "--config.bc.num_steps=10"]  # the cheapest run that leaves a checkpoint
SOURCE_DATASET = "local/pointmaze/umaze-small-v1"
USAGE, RUN = 2, 1  # the launcher's exit codes for a usage error and for a problem found while running


def snapshot(workdir) -> dict:
    """Every file of a run with its size and content hash."""
    files = {}
    for folder, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
    return files


def copy_dataset(new_id: str) -> str:
    """A copy of the generated dataset under `new_id`; returns its HDF5 file."""
    root = os.environ["MINARI_DATASETS_PATH"]
    target = os.path.join(root, new_id)
    shutil.copytree(os.path.join(root, SOURCE_DATASET), target)
    meta_path = os.path.join(target, "data", "metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    with open(meta_path, "w") as f:
        json.dump({**meta, "dataset_id": new_id}, f)
    return os.path.join(target, "data", "main_data.hdf5")


def write_nan_dataset() -> None:
    import h5py

    with h5py.File(copy_dataset("local/pointmaze/nan-v0"), "r+") as f:
        f["episode_3/observations/observation"][5, 0] = float("nan")


def _array_paths(group, dataset_type) -> list[str]:
    paths = []
    group.visititems(lambda path, item: paths.append(path) if isinstance(item, dataset_type) else None)
    return paths


def write_empty_dataset() -> None:
    """Every episode cut to zero steps (one observation, no action)."""
    import h5py

    with h5py.File(copy_dataset("local/pointmaze/empty-v0"), "r+") as f:
        for episode in f.values():
            arrays = _array_paths(episode, h5py.Dataset)
            for path in arrays:
                data = episode[path][:1 if path.startswith("observations") else 0]
                del episode[path]
                episode.create_dataset(path, data=data)
            episode.attrs["total_steps"] = 0


# Launched: (id, launch arguments, workdir: 'trained' run or a fresh one, exit code, text the message
# must hold). Flag parsing; one rule of each tier of config_checks (check_config before JAX is imported,
# check_run against the trained run's real checkpoints, check_with_library after JAX is imported); an
# unwritable workdir; the problems found while running (exit 1).
CASES = [
    ("mistyped_section", dict(flags=["--config.stagee1.num_steps=1"]), "trained", USAGE,
     "no field 'stagee1'; did you mean 'stage1'?"),
    ("mistyped_field", dict(flags=["--config.stage1.num_stepz=1"]), "trained", USAGE,
     "no field 'num_stepz'; did you mean 'num_steps'?"),
    ("moved_field", dict(flags=["--config.eval.temperature=0.5"]), "trained", USAGE,
     "it moved to --config.sampling.temperature"),
    ("unknown_variant", dict(config="experiments/pointmaze.py:local,mediumm", tiny=False), "trained", USAGE,
     "unknown config variant 'mediumm'"),
    ("missing_config_file", dict(config="experiments/nope.py", tiny=False), "trained", USAGE,
     "no such config file"),
    ("override_of_wrong_type", dict(flags=["--config.data.horizon=abc"]), "trained", USAGE,
     "--config.data.horizon=abc"),
    ("positional_argument", dict(flags=["extra"]), "trained", USAGE, "unexpected arguments: extra"),
    # tiny=False: a tuple field given twice on the command line is concatenated (TINY sets the scales).
    ("scales_not_increasing", dict(flags=["--config.model.scales=(1,3,2)"], tiny=False), "trained", USAGE,
     "model.scales=(1, 3, 2) must be strictly increasing"),
    ("checkpoint_step_missing", dict(flags=[*BC, "--mode=eval", "--checkpoint_step=7"]), "trained", USAGE,
     "no bc checkpoint at that step"),
    ("obs_family_of_another_dataset", dict(flags=["--config.data.obs_family=box"]), "trained", USAGE,
     "set --config.data.obs_family=maze"),
    ("workdir_not_writable", dict(), "under_a_file", USAGE, "cannot be written: Not a directory"),
    ("checkpoint_of_another_config", dict(flags=[*BC, "--config.data.val_fraction=0.1", "--mode=eval"]),
     "trained", RUN, "data.val_fraction: checkpoint 0.05, this run 0.1"),
    ("offline_d4rl_dataset", dict(config="experiments/kitchen.py", tiny=False), "fresh", RUN,
     "kitchen.py:scripted"),
    ("nan_in_observations", dict(flags=["--config.data.dataset_id=local/pointmaze/nan-v0"]), "fresh", RUN,
     "non-finite value (NaN or inf) in observations of episode 3 (first at step 5)"),
    ("episodes_without_steps", dict(flags=["--config.data.dataset_id=local/pointmaze/empty-v0"]), "fresh",
     RUN, "episodes has a step"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (BC: one cheap stage) and its files, with the broken datasets beside its data."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    code, out = launch(workdir, *BC)
    assert code == 0, out[-3000:]
    write_nan_dataset()
    write_empty_dataset()
    return workdir, snapshot(workdir)


@pytest.fixture(scope="module")
def outcomes(trained, tmp_path_factory):
    """Every case, two at a time: (exit code, output) by case id."""
    workdir, _ = trained
    scratch = tmp_path_factory.mktemp("bad")
    (scratch / "a_file").write_text("")
    workdirs = {"trained": workdir, "under_a_file": str(scratch / "a_file" / "run")}

    def run(case):
        name, kwargs, where, _, _ = case
        kwargs = dict(kwargs)
        return launch(workdirs.get(where, str(scratch / name)), *kwargs.pop("flags", []), **kwargs)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip([c[0] for c in CASES], pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_with_one_clear_line(case, outcomes):
    name, _, _, expected_code, expected_text = case
    code, out = outcomes[name]
    assert code == expected_code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = out.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, out[-3000:]
    assert expected_text in "\n".join(lines[errors[0]:]), out[-3000:]
    if expected_code == USAGE:  # one line, two at most, and nothing after it
        assert len(lines) - errors[0] <= 2, out[-3000:]


def test_the_trained_run_is_unchanged(trained, outcomes):
    """Byte for byte, so it still evaluates as before (evaluating it here would double the test's time)."""
    workdir, before = trained
    assert snapshot(workdir) == before


def test_traceback_on_request(tmp_path):
    code, out = launch(str(tmp_path / "run"), "--config.model.scales=(1,3,2)", "--verbosity=1", tiny=False)
    assert code == USAGE and "Traceback" in out and "error: config.model.scales" in out


# The other config rules, in process on the config the launcher loads: (id, config, fields set,
# text the one-line message must hold). The launcher prints exactly this message after "error: ".
KITCHEN = "experiments/kitchen.py:scripted,quicktest"
CONFIG_RULES = [
    ("horizon_not_multiple", QUICKTEST, {"data.horizon": 33},
     "data.horizon=33 must be a multiple of model.downsample=2"),
    ("scales_miss_latent_length", QUICKTEST, {"data.horizon": 64}, "must end in T_lat"),
    ("zero_batch", QUICKTEST, {"stage1.batch_size": 0}, "stage1.batch_size=0 must be an integer >= 1"),
    ("negative_batch", QUICKTEST, {"stage2.batch_size": -4}, "stage2.batch_size=-4 must be an integer >= 1"),
    ("no_eval_seeds", QUICKTEST, {"eval.num_seeds": 0}, "eval.num_seeds=0 must be an integer >= 1"),
    ("chunk_beyond_action_horizon", QUICKTEST, {"eval.action_chunk": 2},
     "eval.action_chunk=2 must be <= model.action_horizon=1"),
    ("heads_do_not_divide_width", QUICKTEST, {"model.tf_heads": 3},
     "tf_width=64 must be divisible by model.tf_heads=3"),
    ("rtg_discount_above_one", QUICKTEST, {"data.rtg_discount": 1.5},
     "data.rtg_discount=1.5 must be in (0, 1]"),
    ("zero_steps_per_call", QUICKTEST, {"train.steps_per_call": 0}, "train.steps_per_call=0"),
    ("multi_outside_pointmaze", KITCHEN, {"eval.multi": True}, "only defined for PointMaze"),
    ("untrained_acting_head", KITCHEN, {"head.num_steps": 0}, "set --config.head.acts=False"),
]


@pytest.mark.parametrize("name, config_arg, fields, expected", CONFIG_RULES, ids=[c[0] for c in CONFIG_RULES])
def test_config_rule_is_one_clear_line(name, config_arg, fields, expected):
    c = load_experiment(config_arg)
    config_checks.check_config(c)  # fine as shipped
    set_fields(c, fields)
    with pytest.raises(config_checks.UsageError) as error:
        config_checks.check_config(c)
    lines = str(error.value).splitlines()  # the problem, then a count of any others: two lines at most
    assert expected in lines[0] and len(lines) <= 2, lines


def test_batch_must_split_over_the_devices():
    c = set_fields(load_experiment(QUICKTEST), {"stage1.batch_size": 33})
    config_checks.check_config(c)
    config_checks.check_with_library(c, device_count=1)
    with pytest.raises(config_checks.UsageError,
                       match=r"stage1.batch_size=33 is not divisible by the 2 devices of the mesh's "
                             r"data axis; e.g. --config.stage1.batch_size=\d+"):
        config_checks.check_with_library(c, device_count=2)


def _checkpoints(workdir, stage, *steps):
    for step in steps:  # orbax names each finished checkpoint's folder by its step
        os.makedirs(os.path.join(workdir, "checkpoints", stage, str(step)))


def test_modes_need_their_checkpoints(tmp_path):
    mage = set_fields(load_experiment(QUICKTEST), {"head.acts": True})  # umaze: no stage 3 by default
    bc = set_fields(load_experiment(QUICKTEST), {"algorithm": "bc"})
    workdir = str(tmp_path / "run")
    config_checks.check_run(mage, workdir, "train")  # a fresh workdir trains
    for mode, needs in (("eval", "autoencoder"), ("train_transformer", "autoencoder"),
                        ("train_head", "autoencoder")):
        with pytest.raises(config_checks.UsageError, match=f"--mode={mode} needs a trained {needs}"):
            config_checks.check_run(mage, workdir, mode)
    _checkpoints(workdir, "autoencoder", 200)
    config_checks.check_run(mage, workdir, "train_transformer")
    with pytest.raises(config_checks.UsageError, match="--mode=train_head needs a trained transformer"):
        config_checks.check_run(mage, workdir, "train_head")
    _checkpoints(workdir, "transformer", 200)
    with pytest.raises(config_checks.UsageError, match="--mode=eval needs a trained head"):
        config_checks.check_run(mage, workdir, "eval")
    config_checks.check_run(load_experiment(QUICKTEST), workdir, "eval")  # stage 1's head acts
    with pytest.raises(config_checks.UsageError, match="--mode=train_head .* config.head.acts=False"):
        config_checks.check_run(load_experiment(QUICKTEST), workdir, "train_head")

    with pytest.raises(config_checks.UsageError, match="use --mode=train or --mode=eval"):
        config_checks.check_run(bc, workdir, "train_autoencoder")
    with pytest.raises(config_checks.UsageError, match="--mode=eval needs a trained bc"):
        config_checks.check_run(bc, workdir, "eval")
    _checkpoints(workdir, "bc", 10, 20)
    config_checks.check_run(bc, workdir, "eval", checkpoint_step=10)
    with pytest.raises(config_checks.UsageError, match="--checkpoint_step=10 only applies to --mode=eval"):
        config_checks.check_run(bc, workdir, "train", checkpoint_step=10)
    with pytest.raises(config_checks.UsageError,
                       match="--checkpoint_step=7: no bc checkpoint at that step .*; available: 10, 20"):
        config_checks.check_run(bc, workdir, "eval", checkpoint_step=7)


def test_warm_starts_need_a_run_that_trained_the_stage(tmp_path):
    source, workdir = str(tmp_path / "source"), str(tmp_path / "run")
    fields = {"head.acts": True, "init.autoencoder": source}
    with pytest.raises(config_checks.UsageError, match="init.autoencoder=.* holds no autoencoder checkpoint"):
        config_checks.check_run(set_fields(load_experiment(QUICKTEST), fields), workdir, "train")
    _checkpoints(source, "autoencoder", 200)
    _checkpoints(source, "transformer", 200)
    # Stage 1 from the other run: this run's stage 2 can train, and with stage 2 too, its stage 3.
    config_checks.check_run(set_fields(load_experiment(QUICKTEST), fields), workdir, "train_transformer")
    both = {**fields, "init.transformer": source}
    config_checks.check_run(set_fields(load_experiment(QUICKTEST), both), workdir, "train_head")
    with pytest.raises(config_checks.UsageError, match="needs config.init.autoencoder set to the same run"):
        config_checks.check_run(set_fields(load_experiment(QUICKTEST), {"init.transformer": source}),
                                workdir, "train")


# In-process checks of the validator itself: cheap, no subprocess.

def test_every_shipped_experiment_config_passes():
    for path in sorted(os.listdir(os.path.join(REPO, "experiments"))):
        if not path.endswith(".py"):
            continue
        for variant in ("", ":quicktest", ":cpu"):
            name = f"experiments/{path}{variant}"
            config = load_experiment(name)
            try:
                config_checks.check_config(config)
                config_checks.check_with_library(config, device_count=1)
            except config_checks.UsageError as e:
                pytest.fail(f"{name}: {e}")


def _quicktest_config():
    c = configs.apply_size(configs.base_config(), "quicktest")
    c.data.update(dataset_id="local/pointmaze/umaze-v0", obs_family="maze")
    return c


def test_unknown_fields_are_left_alone():
    c = _quicktest_config()
    c.stage3 = configs._stage_config(batch_size=32, num_steps=10, lr=1e-3)  # a stage the checks don't know
    c.model.something_new = "x"
    config_checks.check_config(c)
    c.stage3.batch_size = 0  # but a stage section is checked like the others
    with pytest.raises(config_checks.UsageError, match=r"config.stage3.batch_size=0"):
        config_checks.check_config(c)


def test_target_return_is_a_number():
    c = _quicktest_config()
    del c.eval["target_return"]
    c.eval.target_return = "best"
    with pytest.raises(config_checks.UsageError, match="eval.target_return='best'"):
        config_checks.check_config(c)


def test_head_true_scales_must_be_a_count_of_existing_scales():
    c = _quicktest_config()
    c.head.true_scales = len(c.model.scales) + 1
    with pytest.raises(config_checks.UsageError, match=r"head.true_scales=9 must be <= the number of "
                                                       r"scales \(8"):
        config_checks.check_config(c)
    c.head.true_scales = -1
    with pytest.raises(config_checks.UsageError, match="head.true_scales=-1 must be an integer >= 0"):
        config_checks.check_config(c)


def test_num_plans_must_be_at_least_one_and_reduced_by_a_known_rule():
    c = _quicktest_config()
    c.eval.num_plans = 0
    with pytest.raises(config_checks.UsageError, match="eval.num_plans=0 must be an integer >= 1"):
        config_checks.check_config(c)
    c.eval.num_plans, c.eval.plan_reduce = 4, "average"
    with pytest.raises(config_checks.UsageError,
                       match="eval.plan_reduce='average' must be one of: 'best', 'mean'"):
        config_checks.check_config(c)


def test_rtg_bootstrap_needs_a_discount():
    c = _quicktest_config()
    c.data.rtg_bootstrap, c.data.rtg_discount = True, 1.0
    with pytest.raises(config_checks.UsageError, match=r"rtg_bootstrap=True needs data.rtg_discount < 1"):
        config_checks.check_config(c)
    c.data.rtg_discount = 0.99
    config_checks.check_config(c)


def test_several_problems_are_counted_on_a_second_line():
    c = _quicktest_config()
    c.eval.num_seeds, c.stage1.batch_size, c.model.tf_heads = 0, -1, 3
    with pytest.raises(config_checks.UsageError) as error:
        config_checks.check_config(c)
    assert len(str(error.value).splitlines()) == 2 and "2 more" in str(error.value)


def test_library_names_are_checked():
    c = _quicktest_config()
    c.stage2.lr_schedule = "cosin"
    with pytest.raises(config_checks.UsageError, match="stage2.lr_schedule='cosin' must be one of"):
        config_checks.check_with_library(c, device_count=1)
