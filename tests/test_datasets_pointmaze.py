"""Local PointMaze dataset generator: planner, controller, stream fidelity, written datasets, CLI."""

import minari
import numpy as np
import pytest
from gymnasium_robotics.envs.maze import maps

from mage_jax.data import episodes_from_minari, load_minari_dataset
from mage_jax.datasets import pointmaze
from mage_jax.datasets.maze_planner import MazePlanner, path_is_connected

EVAL_EPISODES = 3  # reference-score episodes per policy: small keeps the tests fast


@pytest.mark.parametrize("layout, start, goal", [
    (maps.U_MAZE, (3, 1), (1, 1)),
    (maps.MEDIUM_MAZE, (1, 1), (6, 6)),
    (maps.LARGE_MAZE, (1, 1), (7, 9)),
])
def test_planner_path_leads_through_free_cells_to_goal(layout, start, goal):
    planner = MazePlanner(layout)
    path = planner.shortest_path(start, goal)
    assert path[0] == start and path[-1] == goal
    assert all(layout[r][c] != 1 for r, c in path)
    assert path_is_connected(path)
    assert len(set(path)) == len(path)
    # Shortest: BFS distances are a consistent potential (neighbours differ by at most one move).
    distances = planner.distances_to(goal)
    assert len(path) - 1 == distances[start]
    for (r, c), d in distances.items():
        for neighbour in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if neighbour in distances:
                assert abs(distances[neighbour] - d) <= 1


def test_planner_known_umaze_path_and_bad_cells():
    planner = MazePlanner(maps.U_MAZE)
    assert planner.shortest_path((3, 1), (1, 1)) == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2),
                                                     (1, 1)]
    assert planner.shortest_path((1, 2), (1, 2)) == [(1, 2)]
    with pytest.raises(ValueError, match="wall"):
        planner.shortest_path((2, 1), (1, 1))
    with pytest.raises(ValueError, match="wall"):
        planner.shortest_path((1, 1), (0, 0))


@pytest.mark.parametrize("dense", [False, True])
def test_fast_stream_matches_env_step(dense):
    """The directly-stepped stream is what `env.step` gives for the same actions, bit for bit."""
    stream = pointmaze.collect_stream(pointmaze.make_collection_env("umaze", dense), 1500, seed=3)
    assert stream.successes.sum() >= 5  # the noisy controller keeps reaching new goals
    env = pointmaze.make_collection_env("umaze", dense)
    obs, _ = env.reset(seed=3)
    states, shown_goals, rewards, successes = [obs["observation"]], [obs["desired_goal"]], [], []
    for action in stream.actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated and not truncated
        states.append(obs["observation"])
        shown_goals.append(obs["desired_goal"])
        rewards.append(reward)
        successes.append(info["success"])
    np.testing.assert_array_equal(np.array(states), stream.states)
    np.testing.assert_allclose(np.array(rewards), stream.rewards, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.array(successes), stream.successes)
    np.testing.assert_array_equal(np.array(shown_goals)[1:], stream.goals[:-1])
    np.testing.assert_array_equal(env.unwrapped.goal, stream.goals[-1])


def test_held_goals_stay_in_force_and_end_the_episode_after_the_hold():
    hold = 15
    stream = pointmaze.collect_stream(pointmaze.make_collection_env("umaze"), 3000, seed=4,
                                      hold_steps=hold)
    changes = np.flatnonzero(stream.goal_changes)
    assert len(changes) >= 3
    for previous, change in zip([-1, *changes[:-1]], changes, strict=True):
        arrival = previous + 1 + int(np.argmax(stream.successes[previous + 1:]))  # first success
        # The goal is held (it stays in force) for `hold` steps after the arrival, then re-drawn.
        assert change == arrival + hold
        assert np.all(stream.goals[arrival:change + 1] == stream.goals[arrival])
        assert not np.array_equal(stream.goals[change + 1], stream.goals[change])
        # The controller keeps the ball at the goal: reward on most held steps.
        assert stream.rewards[arrival:change + 1].sum() >= hold // 2
    bounds = pointmaze.episode_bounds(stream, "success")
    assert [last for _, last in bounds[:-1]] == changes.tolist()
    # Without a hold, goal changes are exactly the successes (D4RL's recipe).
    plain = pointmaze.collect_stream(pointmaze.make_collection_env("umaze"), 1500, seed=4)
    np.testing.assert_array_equal(plain.goal_changes, plain.successes)


def test_controller_solves_eval_env_and_random_does_worse():
    spec = pointmaze.eval_env_spec("medium")
    expert = pointmaze.evaluate_policy(spec, pointmaze.controller_policy(0.0), episodes=2, seed=0)
    noisy = pointmaze.evaluate_policy(spec, pointmaze.controller_policy(0.5), episodes=2, seed=0)
    random = pointmaze.evaluate_policy(spec, pointmaze.random_policy, episodes=2, seed=0)
    assert expert.success_rate == 1.0 and noisy.success_rate == 1.0
    assert expert.mean_return > 200 > random.mean_return


def test_generated_dataset_loads_with_scores_split_and_eval_env():
    dataset_id = pointmaze.generate_pointmaze_dataset(
        dataset_id="test/pointmaze/umaze-v0", maze="umaze", steps=3000, seed=1,
        eval_episodes=EVAL_EPISODES, progress=False)
    dataset = load_minari_dataset(dataset_id, download=False)
    metadata = dataset.storage.metadata
    assert dataset.total_steps == 3000
    assert metadata["ref_max_score"] > metadata["ref_min_score"] >= 0
    assert metadata["num_episodes_average_score"] == EVAL_EPISODES
    assert metadata["author"] and metadata["description"] and metadata["algorithm_name"]
    np.testing.assert_allclose(
        minari.get_normalized_score(dataset, np.array([metadata["ref_min_score"],
                                                       metadata["ref_max_score"]])), [0.0, 1.0])

    episodes = list(dataset.iterate_episodes())
    assert len(episodes) > 10
    for index, episode in enumerate(episodes):
        assert episode.truncations[-1] and not episode.truncations[:-1].any()
        assert not episode.terminations.any()
        # Sparse reward: only the success step (the last, except maybe for the unfinished tail) pays.
        expected = np.zeros(len(episode))
        if index < len(episodes) - 1:
            expected[-1] = 1.0
            final = episode.observations["achieved_goal"][-1] - episode.observations["desired_goal"][-1]
            assert np.linalg.norm(final) <= pointmaze.SUCCESS_DISTANCE
        np.testing.assert_array_equal(episode.rewards, expected)
        goals = episode.observations["desired_goal"]
        np.testing.assert_array_equal(goals, np.broadcast_to(goals[0], goals.shape))
        np.testing.assert_array_equal(episode.observations["achieved_goal"],
                                      episode.observations["observation"][:, :2])
    # Consecutive episodes chain: each starts where the previous ended.
    for previous, following in zip(episodes, episodes[1:], strict=False):
        np.testing.assert_array_equal(previous.observations["observation"][-1],
                                      following.observations["observation"][0])

    arrays = episodes_from_minari(dataset, "maze")
    assert arrays.observations.shape[-1] == 6 and arrays.num_steps == 3000
    # Bootstrapped from Minari's truncation flags: a success-truncated episode is worth 1 / (1 - 0.99)
    # (scaled to 1.0) at its goal and 0.99^d d steps before it.
    held = episodes_from_minari(dataset, "maze", rtg_discount=0.99, rtg_scale=100.0, rtg_bootstrap=True)
    lengths = held.lengths[:-1]
    np.testing.assert_allclose(held.returns_to_go[np.arange(len(lengths)), lengths - 1], 1.0, rtol=1e-5)
    np.testing.assert_allclose(held.returns_to_go[:-1, 0], 0.99 ** (lengths - 1.0), rtol=1e-4)

    env = dataset.recover_environment(eval_env=True)
    assert env.spec.max_episode_steps == 300
    assert env.spec.kwargs["reset_target"] is False and env.spec.kwargs["continuing_task"] is True
    assert env.spec.kwargs["maze_map"][1][1] == "g"
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        goal_cell = tuple(env.unwrapped.maze.cell_xy_to_rowcol(obs["desired_goal"]))
        assert goal_cell == (1, 1)


def test_fixed_split_overwrite_and_bad_input():
    dataset_id = "test/pointmaze/umaze-fixed-v0"
    pointmaze.generate_pointmaze_dataset(dataset_id=dataset_id, maze="umaze", steps=200, eval_episodes=1,
                                         progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        pointmaze.generate_pointmaze_dataset(dataset_id=dataset_id, maze="umaze", steps=200,
                                             eval_episodes=1, progress=False)
    pointmaze.generate_pointmaze_dataset(dataset_id=dataset_id, maze="umaze", steps=900, split="fixed",
                                         episode_length=300, eval_episodes=1, progress=False,
                                         overwrite=True)
    dataset = load_minari_dataset(dataset_id, download=False)
    lengths = [len(episode) for episode in dataset.iterate_episodes()]
    assert lengths == [300, 300, 300]
    assert dataset.storage.metadata["pointmaze_generation"]["split"] == "fixed"

    with pytest.raises(ValueError, match="unknown maze"):
        pointmaze.generate_pointmaze_dataset(dataset_id="test/pointmaze/x-v0", maze="huge", steps=10)
    with pytest.raises(ValueError, match="unknown split"):
        pointmaze.generate_pointmaze_dataset(dataset_id="test/pointmaze/x-v0", maze="umaze", steps=10,
                                             split="sometimes")
    with pytest.raises(ValueError, match="malformed dataset id"):
        pointmaze.generate_pointmaze_dataset(dataset_id="no-version", maze="umaze", steps=10)
    with pytest.raises(ValueError, match="steps"):
        pointmaze.generate_pointmaze_dataset(dataset_id="test/pointmaze/x-v0", maze="umaze", steps=0)


def test_cli_prints_summary(capsys):
    code = pointmaze.main(["--maze=umaze", "--steps=400", "--eval-episodes=1", "--no-progress",
                           "--dataset-id=test/pointmaze/cli-v0"])
    out = capsys.readouterr().out
    assert code == 0
    for field in ("test/pointmaze/cli-v0", "episodes:", "ref_min_score:", "ref_max_score:",
                  "size on disk:", "steps/s"):
        assert field in out
    assert pointmaze.main(["--maze=umaze", "--steps=400", "--no-progress",
                           "--dataset-id=test/pointmaze/cli-v0"]) == 2  # exists, no --overwrite
