import os

import jax.numpy as jnp
import numpy as np
import pytest

from mage_jax import configs
from mage_jax.training.checkpoints import (
    CheckpointMismatchError,
    StageCheckpointer,
    config_differences,
    config_to_json,
)


def _state(width=3):
    return {"step": jnp.array(7), "params": {"w": jnp.arange(width * 2.0).reshape(width, 2)}}


def _meta(config):
    return {"config": config_to_json(config), "norm_stats": {"state_mean": [0.0, 1.0]}}


def test_round_trip_restores_state_and_meta(tmp_path):
    config = configs.base_config()
    ckpt = StageCheckpointer(str(tmp_path), "autoencoder", keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(), _meta(config))
    ckpt.close()
    ckpt = StageCheckpointer(str(tmp_path), "autoencoder", keep=2)
    assert ckpt.latest_step() == 3
    assert sorted(os.listdir(ckpt.directory)) == ["2", "3"]  # keep-last-k
    zeros = {"step": jnp.array(0), "params": {"w": jnp.zeros((3, 2))}}
    state, meta = ckpt.restore(zeros, config_to_json(config))
    np.testing.assert_array_equal(state["params"]["w"], _state()["params"]["w"])
    assert meta["norm_stats"] == {"state_mean": [0.0, 1.0]}


def test_changed_model_config_is_a_clear_error(tmp_path):
    config = configs.base_config()
    ckpt = StageCheckpointer(str(tmp_path), "autoencoder")
    ckpt.save(1, _state(), _meta(config))
    ckpt.wait()
    other = configs.base_config()
    other.model.code_dim = 64
    other.stage1.lr = 1.0  # optimiser settings may change on resume
    with pytest.raises(CheckpointMismatchError) as e:
        ckpt.restore(_state(), config_to_json(other))
    message = str(e.value)
    assert "model.code_dim: checkpoint 32, this run 64" in message
    assert "stage1.lr" not in message and "fresh --workdir" in message


def test_a_run_saved_before_a_field_existed_matches_that_field_at_its_old_value():
    saved = config_to_json(configs.base_config())
    del saved["data"]["rtg_bootstrap"]  # a run saved before the field was added
    current = configs.base_config()
    assert config_differences(saved, config_to_json(current)) == []
    current.data.rtg_bootstrap = True
    assert config_differences(saved, config_to_json(current)) == [
        "data.rtg_bootstrap: checkpoint False, this run True"]


def test_changed_shapes_are_a_clear_error(tmp_path):
    config = configs.base_config()
    ckpt = StageCheckpointer(str(tmp_path), "transformer")
    ckpt.save(1, _state(width=3), _meta(config))
    ckpt.wait()
    with pytest.raises(CheckpointMismatchError, match=r"\(3, 2\).*\(4, 2\)|shape"):
        ckpt.restore(_state(width=4), config_to_json(config))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    config = configs.base_config()
    ckpt = StageCheckpointer(str(tmp_path), "autoencoder")
    ckpt.save(5, _state(), _meta(config))
    ckpt.wait()
    for root, _, files in os.walk(os.path.join(ckpt.directory, "5", "state")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(CheckpointMismatchError, match="corrupt"):
        ckpt.restore(_state(), config_to_json(config))
