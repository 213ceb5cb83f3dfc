"""Every user mistake: a non-zero exit and one clear line, no traceback, and the earlier run untouched.

The bad inputs run as a user runs them (subprocesses of the launcher) against one tiny trained run, two
at a time since most fail within a second: the point is that they fail before any work.
"""

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from mage_jax import config_checks, configs

CONFIG = "experiments/pointmaze.py:local,umaze,quicktest"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough for CI: a 5k-step dataset, few updates, short evaluation episodes.
TINY = ["--config.data.generator_kwargs.steps=5000", "--config.train.log_every=10",
        "--config.eval.max_steps=10", "--config.eval.num_seeds=4"]
BC = ["--config.algorithm=bc", "--config.bc.num_steps=10"]  # the cheapest run that leaves a checkpoint
SOURCE_DATASET = "local/pointmaze/umaze-small-v1"
USAGE, RUN = 2, 1  # the launcher's exit codes for a usage error and for a problem found while running


def launch(workdir, *flags, config=CONFIG, tiny=True, env=None):
    cmd = [sys.executable, "-m", "mage_jax.main", f"--config={config}", f"--workdir={workdir}",
           *(TINY if tiny else []), *flags]
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, timeout=600)
    return proc.returncode, proc.stdout


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


# (id, launch arguments, workdir: 'trained' run or a fresh one, exit code, text the message must hold)
CASES = [
    ("mistyped_section", dict(flags=["--config.stagee1.num_steps=1"]), "trained", USAGE,
     "no field 'stagee1'; did you mean 'stage1'?"),
    ("mistyped_field", dict(flags=["--config.stage1.num_stepz=1"]), "trained", USAGE,
     "no field 'num_stepz'; did you mean 'num_steps'?"),
    ("unknown_variant", dict(config="experiments/pointmaze.py:local,mediumm", tiny=False), "trained", USAGE,
     "unknown config variant 'mediumm'"),
    ("missing_config_file", dict(config="experiments/nope.py", tiny=False), "trained", USAGE,
     "no such config file"),
    ("override_of_wrong_type", dict(flags=["--config.data.horizon=abc"]), "trained", USAGE,
     "--config.data.horizon=abc"),
    ("positional_argument", dict(flags=["extra"]), "trained", USAGE, "unexpected arguments: extra"),
    ("scales_not_increasing", dict(flags=["--config.model.scales=(1,3,2)"]), "trained", USAGE,
     "model.scales=(1, 3, 2) must be strictly increasing"),
    ("horizon_not_multiple", dict(flags=["--config.data.horizon=33"]), "trained", USAGE,
     "data.horizon=33 must be a multiple of model.downsample=2"),
    ("scales_miss_latent_length", dict(flags=["--config.data.horizon=64"]), "trained", USAGE,
     "must end in T_lat"),
    ("zero_batch", dict(flags=["--config.stage1.batch_size=0"]), "trained", USAGE,
     "stage1.batch_size=0 must be an integer >= 1"),
    ("negative_batch", dict(flags=["--config.stage2.batch_size=-4"]), "trained", USAGE,
     "stage2.batch_size=-4 must be an integer >= 1"),
    ("no_eval_seeds", dict(flags=["--config.eval.num_seeds=0"]), "trained", USAGE,
     "eval.num_seeds=0 must be an integer >= 1"),
    ("chunk_beyond_action_horizon", dict(flags=["--config.eval.action_chunk=2"]), "trained", USAGE,
     "eval.action_chunk=2 must be <= model.action_horizon=1"),
    ("heads_do_not_divide_width", dict(flags=["--config.model.tf_heads=3"]), "trained", USAGE,
     "tf_width=64 must be divisible by model.tf_heads=3"),
    ("rtg_discount_above_one", dict(flags=["--config.data.rtg_discount=1.5"]), "trained", USAGE,
     "data.rtg_discount=1.5 must be in (0, 1]"),
    ("zero_steps_per_call", dict(flags=["--config.train.steps_per_call=0"]), "trained", USAGE,
     "train.steps_per_call=0"),
    ("multi_outside_pointmaze", dict(config="experiments/kitchen.py:scripted,quicktest", tiny=False,
                                     flags=["--config.eval.multi=True"]), "fresh", USAGE,
     "only defined for PointMaze"),
    ("eval_without_checkpoint", dict(flags=["--mode=eval"]), "trained", USAGE,
     "--mode=eval needs a trained autoencoder"),
    ("checkpoint_step_missing", dict(flags=[*BC, "--mode=eval", "--checkpoint_step=7"]), "trained", USAGE,
     "no bc checkpoint at that step"),
    ("checkpoint_step_when_training", dict(flags=[*BC, "--checkpoint_step=10"]), "trained", USAGE,
     "only applies to --mode=eval"),
    ("stage_mode_for_bc", dict(flags=[*BC, "--mode=train_autoencoder"]), "trained", USAGE,
     "use --mode=train or --mode=eval"),
    ("workdir_not_writable", dict(), "under_a_file", USAGE, "cannot be written: Not a directory"),
    ("obs_family_of_another_dataset", dict(flags=["--config.data.obs_family=box"]), "trained", USAGE,
     "set --config.data.obs_family=maze"),
    ("batch_not_divisible_by_devices",
     dict(flags=["--config.stage1.batch_size=33"],
          env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}), "trained", USAGE,
     "stage1.batch_size=33 is not divisible by the 2 devices"),
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
    code, out = launch(str(tmp_path / "run"), "--config.model.scales=(1,3,2)", "--verbosity=1")
    assert code == USAGE and "Traceback" in out and "error: config.model.scales" in out


# In-process checks of the validator itself: cheap, no subprocess.

def _experiment_configs():
    for path in sorted(os.listdir(os.path.join(REPO, "experiments"))):
        if not path.endswith(".py"):
            continue
        spec = importlib.util.spec_from_file_location(path[:-3], os.path.join(REPO, "experiments", path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for variant in (None, "quicktest", "cpu"):
            yield f"{path}:{variant}", module.get_config(variant)


def test_every_shipped_experiment_config_passes():
    for name, config in _experiment_configs():
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


def test_num_plans_must_be_at_least_one():
    c = _quicktest_config()
    c.eval.num_plans = 0
    with pytest.raises(config_checks.UsageError, match="eval.num_plans=0 must be an integer >= 1"):
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
