"""Minari loading: fast, clear failures, and a tiny PointMaze dataset end to end.

conftest.py sets HF_HUB_OFFLINE=1 and a private temporary MINARI_DATASETS_PATH.
"""

import os
import socket
import time
import warnings

import gymnasium as gym
import gymnasium_robotics
import jax
import minari
import numpy as np
import pytest

from mage_jax.data import minari_source
from mage_jax.data.episodes import episodes_from_minari
from mage_jax.data.minari_source import DatasetUnavailableError, load_minari_dataset
from mage_jax.data.normalization import compute_norm_stats
from mage_jax.data.sampler import make_segment_data, sample_segments

gym.register_envs(gymnasium_robotics)
TINY_ID = "test/pointmaze/random-v0"
EPISODE_STEPS = 60  # time limit of the collecting env
TOTAL_STEPS = 270  # 4 full episodes and a partial fifth


@pytest.fixture(scope="module")
def pointmaze_dataset():
    env = minari.DataCollector(gym.make("PointMaze_UMaze-v3", max_episode_steps=EPISODE_STEPS))
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(TOTAL_STEPS):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    with warnings.catch_warnings():  # minari nags about missing author / permalink metadata
        warnings.simplefilter("ignore", UserWarning)
        env.create_dataset(dataset_id=TINY_ID, algorithm_name="random")
    env.close()
    return load_minari_dataset(TINY_ID, download=False)


def test_unknown_dataset_fails_fast_with_a_clear_message():
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as info:
        load_minari_dataset("D4RL/kitchen/nonexistent-v2", download=True,
                            local_alternative="use experiments/kitchen.py:scripted")
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "'D4RL/kitchen/nonexistent-v2'" in message
    assert os.environ["MINARI_DATASETS_PATH"] in message
    assert "HF_HUB_OFFLINE" in message  # the reason, in one line
    assert "use experiments/kitchen.py:scripted" in message


def test_known_id_gets_its_local_alternative_from_the_table():
    with pytest.raises(DatasetUnavailableError, match="experiments/kitchen.py:scripted"):
        load_minari_dataset("D4RL/kitchen/mixed-v2")
    assert minari_source.KNOWN_DATASETS["D4RL/antmaze/large-diverse-v1"].obs_family == "antmaze"
    assert minari_source.KNOWN_DATASETS["mujoco/hopper/medium-replay-v0"].task == "locomotion"


@pytest.mark.parametrize("bad_id",
                         ["kitchen", "kitchen-mixed-v2", "D4RL/kitchen/mixed", "a/b.c-v1"])
def test_malformed_id_is_rejected_at_once(bad_id):
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match="namespace/name-vN"):
        load_minari_dataset(bad_id)
    assert time.perf_counter() - start < 5.0


def test_no_download_says_so():
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_minari_dataset("D4RL/pen/human-v2", download=False)


def test_unreadable_local_copy_is_reported():
    os.makedirs(os.path.join(os.environ["MINARI_DATASETS_PATH"], "test/broken/empty-v0", "data"))
    with pytest.raises(DatasetUnavailableError, match="local copy cannot be read"):
        load_minari_dataset("test/broken/empty-v0")


def test_online_attempt_is_bounded(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("MINARI_REMOTE", *minari_source._PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    # Without huggingface_hub minari cannot download at all: say which extra to install.
    monkeypatch.setattr(minari_source.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetUnavailableError, match=r"minari\[hf\]"):
        load_minari_dataset("D4RL/door/human-v2")
    # With it, an unreachable remote is detected by the probe, not by minari's retries.
    monkeypatch.setattr(minari_source.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    with pytest.raises(DatasetUnavailableError, match="127.0.0.1 is unreachable"):
        load_minari_dataset("D4RL/door/human-v2")


def test_probe_gives_up_after_its_timeout(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(5)

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert "no connection within 0.2 s" in minari_source._probe_connection("example.org", 443, 0.2)
    assert time.perf_counter() - start < 1.0


def test_pointmaze_end_to_end(pointmaze_dataset):
    episodes = episodes_from_minari(pointmaze_dataset, "maze", rtg_discount=0.99, rtg_scale=2.0)
    assert episodes.observations.shape[-1] == 4 + 2  # observation ++ desired_goal
    assert episodes.actions.shape[-1] == 2
    assert episodes.num_steps == TOTAL_STEPS
    assert episodes.num_episodes == pointmaze_dataset.total_episodes
    assert int(episodes.lengths.max()) == EPISODE_STEPS
    np.testing.assert_array_equal(episodes.action_low, [-1, -1])
    np.testing.assert_array_equal(episodes.action_high, [1, 1])

    first = next(pointmaze_dataset.iterate_episodes([0]))
    length = len(first.rewards)
    flat = np.concatenate([first.observations["observation"],
                           first.observations["desired_goal"]], axis=1)
    np.testing.assert_allclose(episodes.observations[0, :length], flat[:length], rtol=1e-6)
    np.testing.assert_allclose(episodes.actions[0, :length], first.actions, rtol=1e-6)
    discounts = 0.99 ** np.arange(length)
    assert episodes.returns_to_go[0, 0] == pytest.approx(np.sum(discounts * first.rewards) / 2.0)

    limited = episodes_from_minari(pointmaze_dataset, "maze", max_episodes=2)
    assert limited.num_episodes == 2

    stats = compute_norm_stats(episodes)
    data = make_segment_data(episodes, stats, max_horizon=16)
    batch = sample_segments(data, jax.random.key(0), 8, 16)
    assert batch["segments"].shape == (8, 16, 1 + 6)
    assert np.all(np.isfinite(np.asarray(batch["segments"])))
