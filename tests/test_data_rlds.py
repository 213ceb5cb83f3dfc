"""RLDS source: the step conversion (always) and a tiny TFDS dataset end to end (tensorflow)."""

import importlib.util

import numpy as np
import pytest

from mage_jax.data.rlds_source import episodes_from_rlds, episodes_from_rlds_steps

LENGTHS = (3, 5)
HAS_TENSORFLOW = (importlib.util.find_spec("tensorflow") is not None
                  and importlib.util.find_spec("tensorflow_datasets") is not None)


def _steps(index: int, length: int) -> dict:
    """One RLDS episode as stacked step fields; values encode (episode, step)."""
    t = np.arange(length, dtype=np.float32)
    return {
        "observation": np.stack([t + 10 * index, -t, np.full(length, index)], 1).astype(np.float32),
        "action": np.stack([t, t + 1], 1).astype(np.float32),
        "reward": np.where(t == length - 1, 1.0, 0.0).astype(np.float32),
        "is_first": t == 0,
        "is_last": t == length - 1,
        "is_terminal": t == length - 1,
    }


def test_rlds_steps_to_episode_arrays():
    episodes = episodes_from_rlds_steps([_steps(i, n) for i, n in enumerate(LENGTHS)], "box",
                                        rtg_discount=0.5)
    np.testing.assert_array_equal(episodes.lengths, LENGTHS)
    assert episodes.observations.shape == (2, 5, 3)
    np.testing.assert_array_equal(episodes.observations[1, :, 0], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(episodes.observations[0, 3:, 0], [2, 2])  # last state repeated
    np.testing.assert_allclose(episodes.returns_to_go[0, :3], [0.25, 0.5, 1.0])
    np.testing.assert_array_equal(episodes.action_low, [0, 1])  # from the data: no RLDS bounds
    np.testing.assert_array_equal(episodes.action_high, [4, 5])


def test_rlds_final_observation_only_step_is_dropped_from_actions():
    episodes = episodes_from_rlds_steps([_steps(0, 4)], "box", final_step_is_observation_only=True)
    np.testing.assert_array_equal(episodes.lengths, [3])
    np.testing.assert_array_equal(episodes.observations[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(episodes.rewards[0], [0, 0, 0])


def test_rlds_errors_are_clear():
    bad = _steps(0, 3)
    del bad["reward"]
    with pytest.raises(ValueError, match=r"RLDS episode 0 lacks step fields \['reward'\]"):
        episodes_from_rlds_steps([bad], "box")
    cut = {k: v[1:] for k, v in _steps(0, 3).items()}
    with pytest.raises(ValueError, match="is_first"):
        episodes_from_rlds_steps([cut], "box")


@pytest.mark.skipif(HAS_TENSORFLOW, reason="tensorflow_datasets is installed")
def test_missing_tfds_names_the_extra():
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tfds\]"'):
        episodes_from_rlds("some_builder", "train", "box")


@pytest.mark.skipif(not HAS_TENSORFLOW, reason="tensorflow / tensorflow_datasets not installed "
                    "(optional extra: pip install -e '.[tfds]')")
def test_tiny_tfds_rlds_dataset_end_to_end(tmp_path):
    import tensorflow_datasets as tfds

    class TinyRlds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            step = {
                "observation": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "action": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "reward": tfds.features.Scalar(dtype=np.float32),
                "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
            }
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"steps": tfds.features.Dataset(step)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for index, length in enumerate(LENGTHS):
                fields = _steps(index, length)
                yield index, {"steps": [{k: v[t] for k, v in fields.items()}
                                        for t in range(length)]}

    builder = TinyRlds(data_dir=str(tmp_path))
    builder.download_and_prepare()
    episodes = episodes_from_rlds(str(builder.data_dir), "train", "box", rtg_scale=2.0)
    order = np.argsort(episodes.lengths)  # TFDS may shuffle episode order
    np.testing.assert_array_equal(episodes.lengths[order], LENGTHS)
    longest = order[-1]
    np.testing.assert_array_equal(episodes.observations[longest, :, 0], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(episodes.actions[longest, :, 1], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(episodes.returns_to_go[longest], [0.5] * 5)
    limited = episodes_from_rlds(str(builder.data_dir), "train", "box", max_episodes=1)
    assert limited.num_episodes == 1
