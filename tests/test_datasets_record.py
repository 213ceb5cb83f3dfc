"""The local recorder: public layouts, episodes that replay exactly in the real env, eval env and scores."""

import gymnasium as gym
import minari
import numpy as np
import pytest

from mage_jax.data import flatten_observations
from mage_jax.datasets import record
from mage_jax.evaluation.envs import make_eval_envs
from mage_jax.evaluation.rollout import evaluate_policy


@pytest.fixture(scope="module")
def recorded():
    """One tiny dataset per family (AntMaze episodes are 700 steps, pen 100, random hoppers ~25)."""
    ids = {"antmaze": ("AntMaze_UMaze-v4", 1), "adroit": ("AdroitHandPen-v1", 2),
           "locomotion": ("Hopper-v5", 4)}
    return {family: minari.load_dataset(record.generate_recorded_dataset(
        f"test/record/{family}-v0", env_id, episodes=episodes, seed=3, ref_episodes=1))
        for family, (env_id, episodes) in ids.items()}


def test_antmaze_has_the_d4rl_layout(recorded):
    dataset = recorded["antmaze"]
    episode = next(dataset.iterate_episodes())
    assert {k: v.shape for k, v in episode.observations.items()} == {
        "observation": (701, 27), "achieved_goal": (701, 2), "desired_goal": (701, 2)}
    assert dataset.action_space == gym.spaces.Box(-1.0, 1.0, (8,), np.float32)
    # D4RL's infos: success plus the simulator state; collection never terminates, truncates at 700.
    assert episode.infos["qpos"].shape == (701, 15) and episode.infos["qvel"].shape == (701, 14)
    np.testing.assert_array_equal(episode.infos["goal"], episode.observations["desired_goal"])
    assert episode.infos["success"].dtype == bool
    assert not episode.terminations.any() and episode.truncations[-1] and episode.truncations.sum() == 1
    collection = dataset.spec.env_spec
    assert collection.kwargs["continuing_task"] and not collection.kwargs["reset_target"]
    assert collection.kwargs["maze_map"][1][1] == "g" and collection.kwargs["maze_map"][3][1] == "r"
    # The eval env the scoring uses: D4RL's eval map, and success ends the episode.
    eval_env = dataset.recover_environment(eval_env=True)
    assert eval_env.spec.kwargs["continuing_task"] is False and eval_env.spec.max_episode_steps == 700
    assert eval_env.spec.kwargs["maze_map"][1][3] == "r" and eval_env.spec.kwargs["maze_map"][3][3] == "g"
    eval_env.close()


def test_adroit_and_locomotion_have_box_layouts_and_their_horizons(recorded):
    pen, hopper = recorded["adroit"], recorded["locomotion"]
    pen_episode = next(pen.iterate_episodes())
    assert pen_episode.observations.shape == (101, 45) and pen_episode.actions.shape == (100, 24)
    assert pen.recover_environment(eval_env=True).spec.max_episode_steps == 100  # D4RL pen horizon
    # Adroit reports `success` only after a step: row 0 is False and the metadata says so.
    assert pen_episode.infos["success"].shape == (101,) and not pen_episode.infos["success"][0]
    assert "success" in pen.storage.metadata["recording"]["info_keys_missing_at_reset"]
    assert hopper.observation_space.shape == (11,)
    assert hopper.recover_environment(eval_env=True).spec.id == "Hopper-v5"


@pytest.mark.parametrize("family", ["antmaze", "adroit", "locomotion"])
def test_episodes_replay_exactly_in_the_real_env(recorded, family):
    """Rewards, terminations, truncations and observations are what the env returns for those actions."""
    dataset = recorded[family]
    env = dataset.recover_environment()
    seed = dataset.storage.metadata["recording"]["seed"]
    for episode in dataset.iterate_episodes():
        obs, _ = env.reset(seed=seed + int(episode.id))  # episode i was recorded from seed + i
        for t, action in enumerate(episode.actions):
            obs, reward, terminated, truncated, _ = env.step(action)
            assert reward == episode.rewards[t]
            assert (terminated, truncated) == (episode.terminations[t], episode.truncations[t])
        obs_family = "antmaze" if family == "antmaze" else "box"
        np.testing.assert_array_equal(flatten_observations(_batched(obs), obs_family)[0],
                                      flatten_observations(episode.observations, obs_family)[-1])
    env.close()
    # Random hoppers fall: the env's terminations are in the data, not a time limit.
    if family == "locomotion":
        assert all(e.terminations[-1] for e in dataset.iterate_episodes())


def test_reference_scores_are_honest(recorded):
    for dataset in recorded.values():
        metadata = dataset.storage.metadata
        assert np.isfinite(metadata["ref_min_score"])
        assert "ref_max_score" not in metadata and "no expert" in metadata["ref_max_score_note"]
        with pytest.raises(ValueError):
            minari.get_normalized_score(dataset, np.zeros(1))


def test_antmaze_eval_env_ends_the_episode_at_the_goal(recorded):
    """Success ends an eval episode and scores 100 (the ant is moved onto the goal)."""
    spec = make_eval_envs(recorded["antmaze"], "antmaze", max_steps=5)
    env = spec.factory()
    obs, _ = env.reset(seed=0)
    data = env.unwrapped.data
    data.qpos[:2] = obs["desired_goal"]
    obs, reward, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert terminated and info["success"] and reward == 1.0
    env.close()

    def stand_still(states, rtg, key):  # zero torques: the ant never reaches the goal
        return np.zeros((len(states), 8), np.float32)

    rollout = evaluate_policy(stand_still, spec, num_seeds=2, seed_offset=0, obs_family="antmaze",
                              target_return=1.0, vector="sync", progress=False)
    assert rollout.success is not None and not rollout.success.any() and (rollout.lengths == 5).all()


def test_cli_records_and_rejects_bad_requests(capsys):
    assert record.main(["--env=Walker2d-v5", "--episodes=1", "--ref-episodes=1",
                        "--dataset-id=test/record/walker-v0"]) == 0
    assert "ref_max_score:  none" in capsys.readouterr().out
    assert record.main(["--env=Walker2d-v5", "--episodes=1", "--dataset-id=test/record/walker-v0"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert record.main(["--env=PointMaze_UMaze-v3", "--episodes=1", "--dataset-id=a/b-v0"]) == 2
    assert "mage_jax.datasets.pointmaze" in capsys.readouterr().err
    assert record.main(["--env=Hopper-v5", "--episodes=0", "--dataset-id=a/b-v0"]) == 2
    assert record.main(["--env=Hopper-v5", "--dataset-id=no-version"]) == 2


def _batched(obs):
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]
