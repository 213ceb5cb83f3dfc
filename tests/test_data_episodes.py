"""Observation flattening, returns-to-go, episode packing and normalisation (numpy only)."""

import json

import numpy as np
import pytest

from mage_jax.data.episodes import episodes_from_lists, held_tail_value, returns_to_go
from mage_jax.data.normalization import NormStats, compute_norm_stats
from mage_jax.data.observations import flatten_observations, infer_obs_family


def test_flatten_kitchen_keeps_only_the_observation_key():
    obs = {"observation": np.arange(6.0).reshape(2, 3),
           "achieved_goal": {"kettle": np.ones((2, 7))},
           "desired_goal": {"kettle": np.zeros((2, 7))}}
    out = flatten_observations(obs, "kitchen")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, 4, 5]])


def test_flatten_maze_is_observation_then_desired_goal():
    obs = {"desired_goal": np.array([[7.0, 8.0]]),  # dict order must not matter
           "achieved_goal": np.array([[5.0, 6.0]]),
           "observation": np.array([[1.0, 2.0, 3.0, 4.0]])}
    np.testing.assert_array_equal(flatten_observations(obs, "maze"), [[1, 2, 3, 4, 7, 8]])


def test_flatten_antmaze_puts_the_ants_position_first_and_the_goal_last():
    """The ant's 27-D observation has no x-y position; only achieved_goal says where the ant is."""
    obs = {"desired_goal": np.array([[7.0, 8.0]]), "achieved_goal": np.array([[5.0, 6.0]]),
           "observation": np.arange(27.0)[None]}
    out = flatten_observations(obs, "antmaze")
    assert out.shape == (1, 31)
    np.testing.assert_array_equal(out[0, :2], [5, 6])
    np.testing.assert_array_equal(out[0, -2:], [7, 8])


def test_flatten_box_keeps_array_and_flattens_extra_axes():
    obs = np.arange(12.0).reshape(3, 2, 2)
    out = flatten_observations(obs, "box")
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out[1], [4, 5, 6, 7])
    assert flatten_observations(np.arange(3.0), "box").shape == (3, 1)


@pytest.mark.parametrize("obs, family, message", [
    ({"observation": np.zeros((2, 4))}, "maze", "'desired_goal'"),
    ({"state": np.zeros((2, 4))}, "kitchen", "'observation'"),
    (np.zeros((2, 4)), "maze", "use obs_family 'box'"),
    ({"observation": np.zeros((2, 4))}, "box", "use 'kitchen', 'maze' or 'antmaze'"),
    (np.zeros((2, 4)), "image", "unknown observation family 'image'"),
])
def test_flatten_errors_say_what_is_wrong(obs, family, message):
    with pytest.raises(ValueError, match=message):
        flatten_observations(obs, family)


def test_infer_obs_family_from_namespace():
    assert infer_obs_family("D4RL/kitchen/mixed-v2") == "kitchen"
    assert infer_obs_family("local/kitchen/scripted-v0") == "kitchen"
    assert infer_obs_family("D4RL/antmaze/umaze-v1") == "antmaze"
    assert infer_obs_family("D4RL/pointmaze/large-dense-v2") == "maze"
    assert infer_obs_family("D4RL/door/human-v2") == "box"
    assert infer_obs_family("mujoco/hopper/medium-v0") == "box"


def test_returns_to_go_undiscounted_and_discounted():
    rewards = np.array([1.0, 0.0, 2.0, 3.0])
    np.testing.assert_allclose(returns_to_go(rewards, 1.0), [6, 5, 5, 3])
    # R_3 = 3, R_2 = 2 + .5*3, R_1 = 0 + .5*3.5, R_0 = 1 + .5*1.75
    np.testing.assert_allclose(returns_to_go(rewards, 0.5), [1.875, 1.75, 3.5, 3.0])
    with pytest.raises(ValueError, match="discount"):
        returns_to_go(rewards, 0.0)


def test_held_reward_bootstrap_makes_a_held_goal_worth_the_same_at_every_step():
    # A goal reached at step 2 and held until the data truncates the episode: without a bootstrap the
    # return shrinks along the hold (a settled ball looks worse than an arriving one).
    rewards = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    plain = returns_to_go(rewards, 0.9)
    assert plain[2] > plain[3] > plain[4] == 1.0
    tail = held_tail_value(rewards, 0.9)
    assert tail == pytest.approx(10.0)
    held = returns_to_go(rewards, 0.9, tail)
    np.testing.assert_allclose(held[2:], 10.0)
    np.testing.assert_allclose(held[:2], [8.1, 9.0])  # still a time-to-goal code before arrival
    assert held_tail_value(np.array([1.0, 0.0]), 0.9) == 0.0  # cut short away from the goal
    with pytest.raises(ValueError, match="discount"):
        held_tail_value(rewards, 1.0)
    # Only flagged episodes are bootstrapped.
    obs = [np.zeros((5, 1)), np.zeros((5, 1))]
    act = [np.zeros((5, 1)), np.zeros((5, 1))]
    eps = episodes_from_lists(obs, act, [rewards, rewards], rtg_discount=0.9, rtg_scale=10.0,
                              bootstrapped=[True, False])
    np.testing.assert_allclose(eps.returns_to_go[0], held / 10.0, rtol=1e-6)
    np.testing.assert_allclose(eps.returns_to_go[1], plain / 10.0, rtol=1e-6)
    with pytest.raises(ValueError, match="bootstrap flags"):
        episodes_from_lists(obs, act, [rewards, rewards], bootstrapped=[True])


def _toy_lists():
    """Three episodes of lengths 3, 1, 2 whose values identify (episode, step)."""
    lengths = [3, 1, 2]
    obs = [np.stack([[10 * i + t, -t] for t in range(n + 1)]).astype(np.float32)
           for i, n in enumerate(lengths)]  # Minari style: one observation more than actions
    act = [np.full((n, 1), i + 1.0) for i, n in enumerate(lengths)]
    rew = [np.arange(1.0, n + 1) for n in lengths]
    return obs, act, rew


def test_episodes_from_lists_pads_and_scales_rtg():
    obs, act, rew = _toy_lists()
    eps = episodes_from_lists(obs, act, rew, rtg_discount=0.5, rtg_scale=2.0)
    assert eps.observations.shape == (3, 3, 2) and eps.actions.shape == (3, 3, 1)
    np.testing.assert_array_equal(eps.lengths, [3, 1, 2])
    assert eps.lengths.dtype == np.int32 and eps.observations.dtype == np.float32
    # First T observations kept; past the end the last kept one repeats.
    np.testing.assert_array_equal(eps.observations[1, :, 0], [10, 10, 10])
    np.testing.assert_array_equal(eps.observations[2, :, 0], [20, 21, 21])
    np.testing.assert_array_equal(eps.actions[1, :, 0], [2, 0, 0])
    np.testing.assert_array_equal(eps.rewards[2], [1, 2, 0])
    # rewards 1,2,3 with discount .5: R = [1 + .5*(2 + .5*3), 2 + .5*3, 3] = [2.75, 3.5, 3]; / 2
    np.testing.assert_allclose(eps.returns_to_go[0], [1.375, 1.75, 1.5])
    np.testing.assert_allclose(eps.returns_to_go[2], [(1 + 0.5 * 2) / 2, 1.0, 0.0])
    # Bounds default to the data's range.
    np.testing.assert_array_equal(eps.action_low, [1.0])
    np.testing.assert_array_equal(eps.action_high, [3.0])


def test_episodes_from_lists_skips_empty_episodes_and_limits_count():
    obs, act, rew = _toy_lists()
    obs.insert(1, np.zeros((1, 2)))  # a reset observation and no step
    act.insert(1, np.zeros((0, 1)))
    rew.insert(1, np.zeros(0))
    eps = episodes_from_lists(obs, act, rew)
    assert eps.num_skipped_empty == 1
    np.testing.assert_array_equal(eps.lengths, [3, 1, 2])
    assert episodes_from_lists(obs, act, rew, max_episodes=2).num_episodes == 1


@pytest.mark.parametrize("field", ["observations", "actions", "rewards"])
def test_non_finite_values_name_the_field_and_episode(field):
    obs, act, rew = _toy_lists()
    target = {"observations": obs, "actions": act, "rewards": rew}[field]
    target[2] = np.array(target[2], dtype=np.float64)
    target[2].flat[1] = np.nan if field != "rewards" else np.inf
    with pytest.raises(ValueError, match=rf"non-finite .* in {field} of episode 2"):
        episodes_from_lists(obs, act, rew)


def test_mismatched_step_counts_are_rejected():
    obs, act, rew = _toy_lists()
    obs[0] = obs[0][:2]  # 2 observations for 3 steps
    with pytest.raises(ValueError, match="episode 0: 2 observations for 3 steps"):
        episodes_from_lists(obs, act, rew)


def test_norm_stats_use_only_real_steps_and_round_trip():
    obs, act, rew = _toy_lists()
    eps = episodes_from_lists(obs, act, rew)
    stats = compute_norm_stats(eps)
    real = np.array([[0, 0], [1, -1], [2, -2], [10, 0], [20, 0], [21, -1]], np.float64)
    np.testing.assert_allclose(stats.state_mean, real.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.state_std, real.std(0), rtol=1e-6)
    x = eps.observations
    np.testing.assert_allclose(stats.denormalize(stats.normalize(x)), x, atol=1e-5)
    restored = NormStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_array_equal(restored.state_mean, stats.state_mean)
    np.testing.assert_array_equal(restored.state_std, stats.state_std)
    with pytest.raises(ValueError, match="state_std"):
        NormStats.from_dict({"state_mean": [0.0]})


def test_constant_dimension_gets_floored_std():
    eps = episodes_from_lists([np.ones((4, 2))], [np.zeros((4, 1))], [np.zeros(4)])
    stats = compute_norm_stats(eps, min_std=1e-3)
    np.testing.assert_allclose(stats.state_std, [1e-3, 1e-3])
    assert np.all(np.isfinite(stats.normalize(np.full((1, 2), 1.5, np.float32))))
