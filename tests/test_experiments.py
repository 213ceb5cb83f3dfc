"""Every command in REPRODUCE.md names a config that loads, is consistent and is locked."""

import io
import pathlib
import re
import tokenize

import pytest
from conftest import load_experiment as load_config

from mage_jax.data.observations import OBS_FAMILIES

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = re.findall(r"\| `([^`]+)` \| `python -m mage_jax.main --config=([^`]+)` \|",
                  (ROOT / "REPRODUCE.md").read_text())


def test_reproduce_lists_every_family():
    families = {arg.split(":")[0] for _, arg in ROWS}
    assert families == {f"experiments/{p.name}" for p in (ROOT / "experiments").glob("*.py")}
    assert len(ROWS) >= 40


@pytest.mark.parametrize("dataset,arg", ROWS)
def test_config_matches_its_dataset(dataset, arg):
    for size in ("", ",quicktest", ",cpu"):
        c = load_config(arg + size)
        # quicktest runs of generated PointMaze and recorded data use a small dataset of their own.
        expected = re.sub(r"-v(\d+)", r"-small-v\1", dataset) if size == ",quicktest" and \
            c.data.generator in ("pointmaze", "record") else dataset
        assert expected.startswith(c.data.dataset_id)
        assert c.model.scales[-1] * c.model.downsample == c.data.horizon
        assert c.data.obs_family in OBS_FAMILIES


def test_config_is_locked_against_typos():
    c = load_config("experiments/kitchen.py:scripted,quicktest")
    with pytest.raises(AttributeError, match="batchsize"):
        c.stage1.batchsize = 8
    c.stage1.batch_size = 8  # existing fields stay overridable


def test_pointmaze_acting_choices_hold_at_every_size_and_only_on_local_data():
    """Umaze acts with stage 1's head and guidance 2 after any size modifier, and only on the
    bootstrapped local data they were measured on."""
    for size in ("", ",quicktest", ",cpu"):
        local = load_config("experiments/pointmaze.py:local,umaze" + size)
        assert (local.data.rtg_bootstrap, local.sampling.cfg_scale, local.head.acts) == (True, 2.0, False)
        d4rl = load_config("experiments/pointmaze.py:umaze" + size)
        assert (d4rl.data.rtg_bootstrap, d4rl.sampling.cfg_scale) == (False, 0.0) and d4rl.head.acts
        assert load_config("experiments/pointmaze.py:local,large" + size).head.acts


def test_large_and_kitchen_train_stage2_at_a_higher_learning_rate_only_at_the_cpu_size():
    large = "experiments/pointmaze.py:local,large"
    assert load_config(large + ",cpu").stage2.lr == 1e-3
    assert load_config("experiments/kitchen.py:scripted,cpu").stage2.lr == 1e-3
    assert load_config("experiments/pointmaze.py:local,umaze,cpu").stage2.lr == 5e-4
    assert load_config(large).stage2.lr == load_config("experiments/pointmaze.py:local,umaze").stage2.lr


def test_kitchen_plans_at_temperature_half_only_on_the_scripted_data():
    for size in ("", ",quicktest", ",cpu"):
        assert load_config("experiments/kitchen.py:scripted" + size).sampling.temperature == 0.5
        assert load_config("experiments/kitchen.py:mixed" + size).sampling.temperature == 1.0


def test_every_config_field_has_a_comment():
    """Each line that defines a config field (in the base config, or new in an experiment) has a comment."""
    from mage_jax import configs

    base_fields = set(_flatten(configs.base_config().to_dict()))
    files = [ROOT / "mage_jax" / "configs.py", *(ROOT / "experiments").glob("*.py")]
    for path in files:
        text = path.read_text()
        comments = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                    if tok.type == tokenize.COMMENT}
        is_base = path.name == "configs.py"
        for number, line in enumerate(text.split("def apply_size")[0].splitlines(), 1):
            match = re.match(r"\s+[cs]\.([\w.]+) = ", line)
            if not match or "ConfigDict()" in line or (not is_base and match.group(1) in base_fields):
                continue
            assert number in comments or number - 1 in comments, f"{path.name}:{number}: {line.strip()}"


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"
