"""Evaluation: env factories, batched rollout over seeds, scoring conventions, results json, plots."""

import json
import math
import os
import pickle
import types

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mage_jax.evaluation import envs, plots, results, rollout, scoring
from mage_jax.evaluation import results as results_lib
from mage_jax.evaluation.envs import EvalEnvSpec, make_env_spec_from_id, make_eval_envs
from mage_jax.evaluation.sharded import shard_policy
from mage_jax.robotics_envs import register_robotics_envs
from mage_jax.training import sharding


# --------------------------------------------------------------------------- fake env
class CountdownEnv(gym.Env):
    """Ends after 2 + seed % 5 steps with reward 1 + action[0] per step.

    info["success"] is True at the end of even-length episodes and at every step of any episode
    after the first (an auto-reset one, which must be ignored); info["episode_task_completions"]
    lists task0, task1 as steps pass.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self):
        self.horizon, self.t, self.episodes = 2, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.horizon = 2 + seed % 5
        self.t = 0
        self.episodes += 1
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.horizon
        info = {"success": (done and self.horizon % 2 == 0) or self.episodes > 1,
                "episode_task_completions": [f"task{i}" for i in range(min(self.t, 2))]}
        if self.episodes > 1:
            info["episode_task_completions"] = ["task0", "task1", "task2", "task3"]
        return self._obs(), 1.0 + float(action[0]), done, False, info

    def _obs(self):
        return np.array([self.t, self.horizon, self.episodes], np.float32)


def countdown_spec(max_steps=10):
    return EvalEnvSpec(factory=CountdownEnv, kwargs={}, max_steps=max_steps, family="locomotion",
                       env_id="Countdown")


class RecordingPolicy:
    """Zero actions (or a fixed chunk); remembers what it was called with."""

    def __init__(self, action_dim=2, chunk=None):
        self.calls, self.action_dim, self.chunk = [], action_dim, chunk

    def __call__(self, observations, returns_to_go, key):
        assert observations.dtype == np.float32 and returns_to_go.dtype == np.float32
        assert isinstance(key, jax.Array)
        self.calls.append((observations.copy(), returns_to_go.copy()))
        n = observations.shape[0]
        if self.chunk is None:
            return np.zeros((n, self.action_dim), np.float32)
        return np.broadcast_to(self.chunk, (n, *self.chunk.shape)).copy()


SEEDS = 8  # seed_offset 0: horizons 2, 3, 4, 5, 6, 2, 3, 4


def horizons(num=SEEDS, offset=0):
    return 2 + (offset + np.arange(num)) % 5


# --------------------------------------------------------------------------- scoring
def test_kitchen_score_is_25_per_task():
    records = [{"return": 4.0, "tasks_completed": 4}, {"return": 1.0, "tasks_completed": 1},
               {"return": 0.0, "tasks_completed": 0}, {"return": 2.0, "tasks_completed": 2}]
    scored = scoring.score_episodes(records, "kitchen")
    assert [r["d4rl_score"] for r in scored["per_seed"]] == [100.0, 25.0, 0.0, 50.0]
    agg = scored["aggregate"]["d4rl_score"]
    assert agg["mean"] == pytest.approx(43.75)
    assert agg["stderr"] == pytest.approx(np.std([100, 25, 0, 50], ddof=1) / 2.0)
    assert scored["aggregate"]["tasks_completed"]["mean"] == pytest.approx(1.75)
    assert scoring.headline_metric(scored["aggregate"]) == "d4rl_score"
    with pytest.raises(ValueError, match="tasks_completed"):
        scoring.d4rl_score({"return": 1.0}, "kitchen")


def test_antmaze_score_is_100_times_success():
    records = [{"return": 1.0, "success": True}, {"return": 0.0, "success": False},
               {"return": 0.0, "success": False}, {"return": 1.0, "success": True},
               {"return": 1.0, "success": True}]
    scored = scoring.score_episodes(records, "antmaze")
    assert [r["d4rl_score"] for r in scored["per_seed"]] == [100.0, 0.0, 0.0, 100.0, 100.0]
    assert "steps_to_success" not in scored["aggregate"]  # not recorded
    for record, step in zip(records, (7, 0, 0, 3, 5), strict=True):
        record["first_success_step"] = step
    timed = scoring.score_episodes(records, "antmaze")["aggregate"]["steps_to_success"]
    assert timed["mean"] == pytest.approx(5.0) and timed["n"] == 3  # the successful seeds only
    assert scored["aggregate"]["d4rl_score"]["mean"] == pytest.approx(60.0)
    assert scored["aggregate"]["success_rate"]["mean"] == pytest.approx(60.0)
    # sample std of [1, 0, 0, 1, 1] x 100 is sqrt(0.3) x 100
    assert scored["aggregate"]["d4rl_score"]["stderr"] == pytest.approx(100 * math.sqrt(0.3 / 5))
    with pytest.raises(ValueError, match="success"):
        scoring.d4rl_score({"return": 1.0}, "antmaze")


def test_normalised_score_with_reference_scores():
    assert scoring.normalized_score(55.0, 10.0, 100.0) == pytest.approx(50.0)
    np.testing.assert_allclose(scoring.normalized_score(np.array([10.0, 100.0]), 10.0, 100.0),
                               [0.0, 100.0])
    scored = scoring.score_episodes([{"return": 10.0}, {"return": 30.0}], "pointmaze",
                                    ref_scores=(10.0, 30.0))
    assert [r["normalized_score"] for r in scored["per_seed"]] == [0.0, 100.0]
    assert "d4rl_score" not in scored["aggregate"]
    assert scoring.headline_metric(scored["aggregate"]) == "normalized_score"
    with pytest.raises(ValueError, match="ref_max > ref_min"):
        scoring.normalized_score(1.0, 5.0, 5.0)

    dataset = types.SimpleNamespace(storage=types.SimpleNamespace(
        metadata={"ref_min_score": np.float32(-2.0), "ref_max_score": 8.0}))
    assert scoring.reference_scores(dataset) == (-2.0, 8.0)
    assert scoring.reference_scores(types.SimpleNamespace(
        storage=types.SimpleNamespace(metadata={}))) is None


def test_mean_and_stderr():
    mean, stderr = scoring.mean_and_stderr([1.0, 2.0, 3.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert stderr == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2.0)
    assert scoring.mean_and_stderr([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        scoring.mean_and_stderr([])


# --------------------------------------------------------------------------- rollout
def test_finished_seeds_stop_contributing_and_rtg_decrements():
    policy = RecordingPolicy()
    result = rollout.evaluate_policy(policy, countdown_spec(), num_seeds=SEEDS, seed_offset=0,
                                     obs_family="box", target_return=10.0, vector="sync",
                                     progress=False, key=jax.random.PRNGKey(1))
    h = horizons()
    np.testing.assert_array_equal(result.seeds, np.arange(SEEDS))
    np.testing.assert_array_equal(result.lengths, h)
    np.testing.assert_allclose(result.returns, h.astype(float))  # reward 1 per step, own episode only
    # Success at the end of even-length episodes only; auto-reset episodes' success is ignored.
    np.testing.assert_array_equal(result.success, h % 2 == 0)
    np.testing.assert_array_equal(result.first_success_step, np.where(h % 2 == 0, h, 0))
    np.testing.assert_array_equal(result.tasks_completed, np.minimum(h, 2))
    assert result.completed_tasks[0] == ["task0", "task1"]
    # One policy call per step until the longest episode ends; each seed's return-to-go drops by
    # its own reward and freezes once its episode is over.
    assert len(policy.calls) == h.max()
    for t, (_, rtg) in enumerate(policy.calls):
        np.testing.assert_allclose(rtg, 10.0 - np.minimum(t, h))
    np.testing.assert_allclose(result.final_returns_to_go, 10.0 - h)
    records = result.records()
    assert records[3] == {"seed": 3, "return": 5.0, "length": 5, "success": False,
                          "first_success_step": 0, "tasks_completed": 2,
                          "completed_tasks": ["task0", "task1"],
                          "task_steps": {"task0": 1, "task1": 2}}  # the step each was completed
    timing = result.timing
    assert timing["policy_calls"] == h.max() and timing["vector_steps"] == h.max()
    assert timing["env_steps"] == h.max() * SEEDS and timing["episode_steps"] == h.sum()
    assert timing["env_steps_per_s"] > 0 and timing["policy_ms_per_call"] >= 0


def test_rtg_constant_without_decrement_and_scaled():
    policy = RecordingPolicy()
    rollout.evaluate_policy(policy, countdown_spec(), num_seeds=3, seed_offset=0, obs_family="box",
                            target_return=np.array([4.0, 6.0, 8.0]), decrement_return=False,
                            rtg_scale=2.0, vector="sync", progress=False)
    for _, rtg in policy.calls:
        np.testing.assert_allclose(rtg, [2.0, 3.0, 4.0])


def test_step_limit_truncates_episodes():
    result = rollout.evaluate_policy(RecordingPolicy(), countdown_spec(max_steps=3), num_seeds=SEEDS,
                                     seed_offset=0, obs_family="box", target_return=0.0,
                                     vector="sync", progress=False)
    np.testing.assert_array_equal(result.lengths, np.minimum(horizons(), 3))


def test_action_chunks_execute_in_order_with_one_call_per_chunk():
    chunk = np.array([[0.1, 0.0], [0.2, 0.0]], np.float32)  # rewards 1.1 then 1.2
    policy = RecordingPolicy(chunk=chunk)
    result = rollout.evaluate_policy(policy, countdown_spec(), num_seeds=SEEDS, seed_offset=0,
                                     obs_family="box", target_return=0.0, vector="sync",
                                     action_chunk=2, progress=False)
    h = horizons()
    assert len(policy.calls) == math.ceil(h.max() / 2)
    expected = [sum(1.1 if t % 2 == 0 else 1.2 for t in range(n)) for n in h]
    np.testing.assert_allclose(result.returns, expected, rtol=1e-6)
    # The policy sees the state at the start of each chunk: t = 0, 2, 4 (frozen once done).
    np.testing.assert_array_equal(policy.calls[1][0][:, 0], np.minimum(2, h))


def test_a_given_vector_env_is_reused_and_left_open():
    spec = countdown_spec()
    vector_env = rollout.make_vector_env(spec, 4, "sync")
    kwargs = dict(num_seeds=4, seed_offset=3, obs_family="box", target_return=0.0, progress=False,
                  vector_env=vector_env)
    first = rollout.evaluate_policy(RecordingPolicy(), spec, **kwargs)
    second = rollout.evaluate_policy(RecordingPolicy(), spec, **kwargs)  # same seeds, same episodes
    np.testing.assert_array_equal(first.lengths, horizons(4, offset=3))
    np.testing.assert_array_equal(second.lengths, first.lengths)
    # The same env served both calls: per call, a seeded reset plus one auto-reset (horizon 5 < 6).
    assert vector_env.envs[0].episodes == 4
    vector_env.close()
    with pytest.raises(ValueError, match="has 4 envs"):
        rollout.evaluate_policy(RecordingPolicy(), spec, num_seeds=2, seed_offset=0, obs_family="box",
                                target_return=0.0, vector_env=vector_env)


def test_bad_policy_output_and_arguments_get_clear_errors():
    with pytest.raises(ValueError, match=r"must return \(4, A\)"):
        rollout.evaluate_policy(lambda o, r, k: np.zeros((4, 2, 2)), countdown_spec(), num_seeds=4,
                                seed_offset=0, obs_family="box", target_return=0.0, vector="sync",
                                progress=False)
    with pytest.raises(ValueError, match="vector env mode"):
        rollout.evaluate_policy(RecordingPolicy(), countdown_spec(), num_seeds=2, seed_offset=0,
                                obs_family="box", target_return=0.0, vector="threads")
    assert rollout.resolve_vector_mode("auto", "pointmaze", 8) == "sync"
    assert rollout.resolve_vector_mode("sync", "kitchen", 8) == "sync"


def test_pointmaze_rollout_writes_complete_eval_results(tmp_path):
    spec = make_env_spec_from_id("PointMaze_UMaze-v3", max_steps=20, obs_family="maze")
    assert spec.family == "pointmaze" and spec.max_steps == 20

    def random_policy(observations, returns_to_go, key):
        assert observations.shape == (4, 6)  # observation (4) ++ desired_goal (2)
        return np.asarray(jax.random.uniform(key, (4, 2), minval=-1.0, maxval=1.0))

    result = rollout.evaluate_policy(random_policy, spec, num_seeds=4, seed_offset=1000,
                                     obs_family="maze", target_return=1.0, vector="sync",
                                     progress=True, key=jax.random.PRNGKey(0))
    assert list(result.seeds) == [1000, 1001, 1002, 1003]
    assert result.success is not None and result.tasks_completed is None
    assert np.all(result.lengths == 20)  # continuing task: runs to the step limit
    record = results.build_results(result, spec, dataset_id="test/pointmaze/umaze-v0",
                                   checkpoint_step=7, ref_scores=(0.0, 10.0))
    path = results.write_eval_results(str(tmp_path), record)
    assert path == str(tmp_path / "eval_results.json")
    with open(path) as f:
        written = json.load(f)
    for field in ("dataset_id", "checkpoint_step", "env", "num_seeds", "seeds", "per_seed",
                  "aggregate", "headline", "wall_time_s", "env_steps_per_s", "policy_ms_per_step",
                  "timing", "reference_scores"):
        assert field in written, field
    assert written["dataset_id"] == "test/pointmaze/umaze-v0" and written["checkpoint_step"] == 7
    assert written["seeds"] == [1000, 1001, 1002, 1003] and written["num_seeds"] == 4
    assert written["env"]["env_id"] == "PointMaze_UMaze-v3" and written["env"]["max_steps"] == 20
    assert len(written["per_seed"]) == 4
    assert written["headline"]["metric"] == "normalized_score"
    returns = [r["return"] for r in written["per_seed"]]
    assert written["aggregate"]["return"]["mean"] == pytest.approx(np.mean(returns))
    assert [r["normalized_score"] for r in written["per_seed"]] == pytest.approx(
        [10.0 * r for r in returns])
    assert written["aggregate"]["success_rate"]["n"] == 4
    table = results.format_score_table(results.load_eval_results(str(tmp_path)))
    assert "normalized_score" in table and "test/pointmaze/umaze-v0" in table

    png = plots.plot_seed_scores(str(tmp_path), str(tmp_path))
    assert os.path.getsize(png) > 0 and png.startswith(str(tmp_path / "plots"))


def test_async_vector_env_matches_sync():
    """Worker processes (forkserver) rebuild the env from the pickled factory: same episodes."""
    spec = make_env_spec_from_id("PointMaze_UMaze-v3", max_steps=5, obs_family="maze", multi=True)
    policy = RecordingPolicy()
    kwargs = dict(num_seeds=2, seed_offset=7, obs_family="maze", target_return=0.0, progress=False)
    sync = rollout.evaluate_policy(policy, spec, vector="sync", **kwargs)
    sync_obs = [o for o, _ in policy.calls]
    policy.calls.clear()
    asynchronous = rollout.evaluate_policy(policy, spec, vector="async", **kwargs)
    for a, b in zip(sync_obs, [o for o, _ in policy.calls], strict=True):
        np.testing.assert_allclose(a, b)
    np.testing.assert_array_equal(asynchronous.lengths, sync.lengths)
    np.testing.assert_allclose(asynchronous.returns, sync.returns)


# --------------------------------------------------------------------------- env factories
def _fake_dataset(env_spec, eval_env_spec=None, dataset_id="test/fake/data-v0"):
    metadata = {} if eval_env_spec is None else {"eval_env_spec": eval_env_spec.to_json()}
    return types.SimpleNamespace(
        spec=types.SimpleNamespace(env_spec=env_spec, dataset_id=dataset_id),
        storage=types.SimpleNamespace(metadata=metadata))


def test_kitchen_env_is_scored_the_d4rl_way():
    tasks = ["microwave", "kettle", "bottom burner", "light switch"]
    recorded = gym.spec("FrankaKitchen-v1").kwargs.copy()
    recorded.update(tasks_to_complete=tasks, remove_task_when_completed=False,
                    terminate_on_tasks_completed=False)
    env_spec = gym.envs.registration.EnvSpec(
        "FrankaKitchen-v1", entry_point=gym.spec("FrankaKitchen-v1").entry_point,
        max_episode_steps=1000, kwargs=recorded)
    spec = make_eval_envs(_fake_dataset(env_spec), "kitchen", max_steps=0)
    assert spec.family == "kitchen" and spec.max_steps == 280
    assert spec.kwargs["tasks_to_complete"] == tasks
    assert spec.kwargs["remove_task_when_completed"] is True
    assert spec.kwargs["terminate_on_tasks_completed"] is True
    assert spec.describe()["env_kwargs"]["tasks_to_complete"] == tasks
    with pytest.raises(ValueError, match="obs_family"):
        make_eval_envs(_fake_dataset(env_spec), "maze")


def test_antmaze_eval_env_terminates_on_success():
    register_robotics_envs()
    eval_spec = gym.spec("AntMaze_UMaze-v4")
    eval_spec = gym.envs.registration.EnvSpec(
        eval_spec.id, entry_point=eval_spec.entry_point, max_episode_steps=700,
        kwargs={**eval_spec.kwargs, "continuing_task": True, "reset_target": False})
    dataset = _fake_dataset(gym.spec("AntMaze_UMaze-v4"), eval_env_spec=eval_spec)
    spec = make_eval_envs(dataset, "antmaze", max_steps=0)
    assert spec.family == "antmaze" and spec.max_steps == 700
    assert spec.kwargs["continuing_task"] is False


def test_pointmaze_uses_the_dataset_eval_env_and_multi_draws_cells():
    maze_map = [[1, 1, 1, 1, 1], [1, "r", 0, 0, 1], [1, 1, 1, 0, 1], [1, "g", 0, 0, 1],
                [1, 1, 1, 1, 1]]
    eval_spec = gym.envs.registration.EnvSpec(
        "PointMaze_UMaze-v3", entry_point=gym.spec("PointMaze_UMaze-v3").entry_point,
        max_episode_steps=300,
        kwargs={"maze_map": maze_map, "continuing_task": True, "reset_target": False})
    dataset = _fake_dataset(gym.spec("PointMaze_UMaze-v3"), eval_env_spec=eval_spec)
    spec = make_eval_envs(dataset, "maze", max_steps=50)
    assert spec.family == "pointmaze" and spec.max_steps == 50
    assert spec.kwargs == eval_spec.kwargs  # as recorded, nothing overridden

    multi = make_eval_envs(dataset, "maze", max_steps=0, multi=True)
    assert multi.max_steps == 300 and multi.describe()["multi"] is True
    env = pickle.loads(pickle.dumps(multi.factory))()  # picklable for async workers
    try:
        layout = plots.MazeLayout.from_maze(env)
        goals, starts = [], []
        for seed in range(6):
            obs, _ = env.reset(seed=seed)
            goals.append(obs["desired_goal"].copy())
            starts.append(obs["achieved_goal"].copy())
        again, _ = env.reset(seed=0)
        np.testing.assert_allclose(again["desired_goal"], goals[0])  # a seed fixes its start/goal
        # Start and goal lie in two different free cells, and cells vary across seeds.
        cells = {tuple(np.round(g / layout.scaling)) for g in goals}
        assert len(cells) > 1
        assert all(np.linalg.norm(s - g) > 0.5 for s, g in zip(starts, goals, strict=True))
    finally:
        env.close()
    with pytest.raises(ValueError, match="only defined for pointmaze"):
        make_env_spec_from_id("AntMaze_UMaze-v4", multi=True)


def test_real_minari_dataset_gives_its_eval_env_and_reference_scores():
    """The eval env spec and reference scores round-trip through a Minari dataset's metadata."""
    import minari
    from minari import DataCollector

    env = DataCollector(gym.make("PointMaze_UMaze-v3", max_episode_steps=5))
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    maze_map = [[1, 1, 1, 1, 1], [1, "g", 0, 0, 1], [1, 1, 1, 0, 1], [1, "r", 0, 0, 1],
                [1, 1, 1, 1, 1]]
    eval_env = gym.make("PointMaze_UMaze-v3", max_episode_steps=300, maze_map=maze_map,
                        continuing_task=True, reset_target=False)
    env.create_dataset(dataset_id="test/evaluation/tiny-v0", eval_env=eval_env, ref_min_score=1.0,
                       ref_max_score=11.0, algorithm_name="random", author="mage_jax tests",
                       author_email="none@example.com", code_permalink="https://example.com",
                       description="tiny")
    dataset = minari.load_dataset("test/evaluation/tiny-v0")
    spec = make_eval_envs(dataset, "maze")
    assert spec.env_id == "PointMaze_UMaze-v3" and spec.max_steps == 300
    assert spec.kwargs["maze_map"] == maze_map and spec.kwargs["reset_target"] is False
    assert scoring.reference_scores(dataset) == (1.0, 11.0)
    obs, _ = spec.factory().reset(seed=0)
    np.testing.assert_allclose(obs["desired_goal"], [-1.0, 1.0], atol=0.3)  # the 'g' cell (1, 1)


def test_unregistered_recorded_env_is_registered_from_its_entry_point():
    recorded = gym.envs.registration.EnvSpec(
        "PointMaze_MageEvalTest-v0", entry_point=gym.spec("PointMaze_UMaze-v3").entry_point,
        max_episode_steps=30, kwargs={"maze_map": gym.spec("PointMaze_UMaze-v3").kwargs["maze_map"]})
    spec = make_eval_envs(_fake_dataset(recorded), "maze")
    assert spec.family == "pointmaze" and spec.max_steps == 30
    env = pickle.loads(pickle.dumps(spec.factory))()
    assert env.spec.max_episode_steps == 30
    env.close()
    with pytest.raises(ValueError, match="unknown gymnasium env id"):
        make_env_spec_from_id("PointMaze_DoesNotExist-v0")


def test_dataset_without_env_gets_a_clear_error():
    with pytest.raises(ValueError, match="records no environment"):
        make_eval_envs(_fake_dataset(None), "box")
    assert envs.task_family_from_env_id("AdroitHandDoor-v1") == "adroit"
    assert envs.task_family_from_env_id("HalfCheetah-v5") == "locomotion"


# --------------------------------------------------------------------------- plots
def test_plots_write_pngs(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = []
    for step in range(0, 50, 10):
        lines.append({"stage": "stage1", "step": step, "time": step * 0.1, "loss": 1.0 / (step + 1),
                      "loss_recon": 0.5 / (step + 1), "usage/0": 0.1, "usage/1": 0.2})
        lines.append({"stage": "stage2", "step": step, "time": step * 0.1, "loss_ce": 3.0 - step / 50,
                      "accuracy": step / 100})
    metrics.write_text("\n".join(json.dumps(line) for line in lines) + "\n{\"stage\": \"sta")
    paths = plots.plot_learning_curves(str(metrics), str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["learning_curves_stage1.png",
                                                          "learning_curves_stage2.png"]

    register_robotics_envs()  # also when this test runs alone
    env = gym.make("PointMaze_UMaze-v3")
    layout = plots.MazeLayout.from_maze(env)
    env.close()
    assert layout.cell_xy(1, 1) == (-1.0, 1.0)
    rng = np.random.default_rng(0)
    plan = np.cumsum(rng.normal(scale=0.1, size=(3, 16, 6)), axis=1)  # K=3 scales, H=16, S=6
    path = plots.plot_plan(plan, layout, str(tmp_path), start=plan[0, 0], goal=np.array([1.0, -1.0]))
    for p in [*paths, path]:
        assert os.path.getsize(p) > 1000 and p.startswith(str(tmp_path / "plots"))
    with pytest.raises(ValueError, match="one seed"):
        plots.plot_plan(plan[None], layout, str(tmp_path))


def test_per_scale_metrics_share_one_panel_and_single_points_show(tmp_path):
    """accuracy_scale_k and loss_ce_scale_k: one panel per family with a line per scale, coarse to
    fine; a stage validated once (one record) still draws every value as a marker."""
    scales = 8
    record = {"stage": "transformer_val", "step": 200, "loss_ce": 2.0, "action_mse_true_plan": 0.1}
    for k in range(1, scales + 1):
        record[f"accuracy_scale_{k}"] = 0.1 * k
        record[f"loss_ce_scale_{k}"] = 3.0 - 0.3 * k
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps(record) + "\n")
    figure = plots.learning_curve_figures(str(metrics))["transformer_val"]
    axes = {ax.get_title(): ax for ax in figure.axes}
    assert set(axes) == {"accuracy by scale", "loss_ce by scale", "loss_ce", "action_mse_true_plan"}
    for family in ("accuracy", "loss_ce"):
        lines = axes[f"{family} by scale"].get_lines()
        assert [line.get_label() for line in lines] == [f"scale {k}" for k in range(1, scales + 1)]
        assert [float(line.get_ydata()[0]) for line in lines] == [
            record[f"{family}_scale_{k}"] for k in range(1, scales + 1)]
        assert len({line.get_color() for line in lines}) == scales  # told apart by colour
    for ax in figure.axes:  # every line, the lone points included, carries a visible marker
        for line in ax.get_lines():
            assert len(line.get_xdata()) == 1 and line.get_xdata()[0] == 200
            assert line.get_marker() not in ("", "None", None) and line.get_markersize() > 0
    paths = plots.plot_learning_curves(str(metrics), str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["learning_curves_transformer_val.png"]


# --------------------------------------------------------------------------- several training seeds
def test_several_training_seeds_run_in_one_rollout_and_report_iqm_and_interval():
    """`repeats` = 3 training seeds, each acting on its own block of the same evaluation seeds through
    a policy vmapped over stacked params; the record has each seed and the statistics across them."""
    mesh = sharding.make_data_mesh(jax.devices()[:1])
    params = {"gain": np.array([0.0, 0.5, 1.0], np.float32)}  # training seeds 7, 8, 9

    def act(params, observations, returns_to_go, key):  # reward 1 + gain per step
        return jnp.zeros((observations.shape[0], 2)).at[:, 0].set(params["gain"])

    policy = shard_policy(act, params, mesh, num_stacked=3)
    result = rollout.evaluate_policy(policy, countdown_spec(), num_seeds=SEEDS, seed_offset=0,
                                     obs_family="box", target_return=10.0, vector="sync",
                                     progress=False, repeats=3)
    np.testing.assert_array_equal(result.seeds, np.tile(np.arange(SEEDS), 3))
    spec = countdown_spec()
    record = results_lib.build_seed_results(result, [7, 8, 9], spec, dataset_id="test/x/y-v0")
    h = horizons()
    assert record["training_seeds"] == [7, 8, 9] and record["num_seeds"] == SEEDS
    assert record["seeds"] == list(range(SEEDS))
    for block, seed in enumerate(record["per_training_seed"]):
        assert seed["seed"] == 7 + block
        np.testing.assert_allclose([r["return"] for r in seed["per_seed"]], h * (1 + 0.5 * block))
    means = np.array([h.mean() * (1 + 0.5 * b) for b in range(3)])
    over = record["over_training_seeds"]
    assert over["metric"] == "return" and over["n"] == 3
    np.testing.assert_allclose(over["per_seed"], means)
    np.testing.assert_allclose(over["mean"], means.mean())
    np.testing.assert_allclose(over["stderr"], means.std(ddof=1) / np.sqrt(3))
    np.testing.assert_allclose(over["iqm"], means.mean())  # 3 runs: nothing is trimmed
    assert means.min() <= over["iqm_ci95"][0] < over["iqm_ci95"][1] <= means.max()
    assert record["headline"]["n"] == 3 and record["headline"]["mean"] == over["mean"]
    assert record["aggregate"]["return"]["n"] == 3 * SEEDS  # every episode, pooled
    assert [r["training_seed"] for r in record["per_seed"]] == [7] * SEEDS + [8] * SEEDS + [9] * SEEDS
    table = results_lib.format_score_table(record)
    assert "3 training seeds x 8 seeds" in table and "seed 9" in table and "IQM" in table
    # The same scores always give the same interval, whatever numpy's global generator holds, and
    # leave that generator as it was.
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    assert results_lib.seed_statistics(means)["iqm_ci95"] == over["iqm_ci95"]
    np.testing.assert_array_equal(np.random.get_state()[1], state)
