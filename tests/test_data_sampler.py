"""The on-device segment sampler: shapes, determinism, end-of-episode padding, episode isolation."""

import functools

import jax
import numpy as np
import pytest

from mage_jax.data.episodes import episodes_from_lists
from mage_jax.data.normalization import NormStats
from mage_jax.data.sampler import make_segment_data, sample_segments

LENGTHS = (2, 5, 3, 9)  # shorter than the horizon: windows must run past the end
HORIZON = 6
BATCH = 512


@pytest.fixture(scope="module")
def data():
    # Every value of episode i is i + 1 (rewards 1 per step), so a window that reached into
    # another episode would show a foreign value.
    obs = [np.full((n + 1, 3), i + 1.0) for i, n in enumerate(LENGTHS)]
    act = [np.full((n, 2), i + 1.0) for i, n in enumerate(LENGTHS)]
    rew = [np.ones(n) for n in LENGTHS]
    episodes = episodes_from_lists(obs, act, rew)
    identity = NormStats(np.zeros(3, np.float32), np.ones(3, np.float32))
    return make_segment_data(episodes, identity, max_horizon=HORIZON)


@pytest.fixture(scope="module")
def sample():
    return jax.jit(sample_segments, static_argnums=(2, 3))


@pytest.fixture(scope="module")
def batch(data, sample):
    return jax.tree.map(np.asarray, sample(data, jax.random.key(0), BATCH, HORIZON))


def test_shapes_and_dtypes(batch):
    assert batch["states"].shape == (BATCH, HORIZON, 3)
    assert batch["returns_to_go"].shape == (BATCH, HORIZON)
    assert batch["actions"].shape == (BATCH, HORIZON, 2)
    assert batch["mask"].shape == (BATCH, HORIZON) and batch["mask"].dtype == np.float32
    assert batch["first_action"].shape == (BATCH, 2)
    assert batch["segments"].shape == (BATCH, HORIZON, 4)
    np.testing.assert_array_equal(batch["segments"][..., 0], batch["returns_to_go"])
    np.testing.assert_array_equal(batch["segments"][..., 1:], batch["states"])


def test_deterministic_for_a_key(data, sample, batch):
    again = sample(data, jax.random.key(0), BATCH, HORIZON)
    other = sample(data, jax.random.key(1), BATCH, HORIZON)
    for name, value in batch.items():
        np.testing.assert_array_equal(np.asarray(again[name]), value)
    assert not np.array_equal(np.asarray(other["start"]), batch["start"])


def test_windows_stay_inside_their_episode(batch):
    value = batch["episode"][:, None] + 1.0  # the constant of each window's episode
    np.testing.assert_array_equal(batch["states"], np.broadcast_to(value[..., None],
                                                                   batch["states"].shape))
    mask = batch["mask"]
    np.testing.assert_array_equal(batch["actions"], (value * mask)[..., None].repeat(2, -1))
    np.testing.assert_array_equal(batch["first_action"], np.repeat(value, 2, axis=1))


def test_mask_and_rtg_past_the_episode_end(batch):
    lengths = np.asarray(LENGTHS)[batch["episode"]]
    steps = batch["start"][:, None] + np.arange(HORIZON)[None, :]
    assert np.all(batch["start"] >= 0) and np.all(batch["start"] < lengths)
    np.testing.assert_array_equal(batch["mask"], (steps < lengths[:, None]).astype(np.float32))
    # Undiscounted RTG of unit rewards counts the steps left; 0 past the end.
    np.testing.assert_array_equal(batch["returns_to_go"],
                                  np.maximum(lengths[:, None] - steps, 0).astype(np.float32))
    assert (batch["mask"] == 0).any(), "the horizon exceeds every episode, some steps must pad"


def test_starts_are_uniform_over_all_steps(data, sample):
    starts = sample(data, jax.random.key(2), 4096, HORIZON)
    episode, start = np.asarray(starts["episode"]), np.asarray(starts["start"])
    assert set(episode) == set(range(len(LENGTHS)))  # every episode is drawn
    global_step = np.concatenate([[0], np.cumsum(LENGTHS)])[episode] + start
    counts = np.bincount(global_step, minlength=sum(LENGTHS))
    assert counts.shape == (sum(LENGTHS),) and counts.min() > 0
    expected = 4096 / sum(LENGTHS)  # episodes weighted by length: every step equally likely
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_horizon_longer_than_padding_is_a_clear_error(data):
    with pytest.raises(ValueError, match="max_horizon"):
        sample_segments(data, jax.random.key(0), 4, HORIZON + 1)


def test_states_are_normalised_with_the_given_stats():
    episodes = episodes_from_lists([np.full((3, 2), 5.0)], [np.zeros((2, 1))], [np.zeros(2)])
    stats = NormStats(np.array([1.0, 5.0], np.float32), np.array([2.0, 1.0], np.float32))
    data = make_segment_data(episodes, stats, max_horizon=4)
    assert data.states.shape == (1, 2 + 4, 2)
    np.testing.assert_allclose(np.asarray(data.states), np.tile([[2.0, 0.0]], (1, 6, 1)))


def test_sharded_placement_matches_default():
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    episodes = episodes_from_lists([np.arange(8.0).reshape(4, 2)], [np.ones((3, 1))], [np.ones(3)])
    stats = NormStats(np.zeros(2, np.float32), np.ones(2, np.float32))
    make = functools.partial(make_segment_data, episodes, stats, max_horizon=2)
    placed, default = make(sharding=replicated), make()
    assert placed.states.sharding == replicated
    for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(default), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
