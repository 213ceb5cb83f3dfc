"""The scripted FrankaKitchen expert and the Minari dataset it writes."""

import numpy as np
import pytest

from mage_jax.data import flatten_observations, load_minari_dataset
from mage_jax.datasets import kitchen
from mage_jax.datasets.kitchen_expert import KitchenExpert


def test_expert_completes_light_switch_from_perturbed_reset():
    env = kitchen.make_env()
    try:
        rng = np.random.default_rng(3)
        expert = KitchenExpert(env, noise=kitchen.DEFAULT_NOISE, rng=rng)
        _, info = kitchen.reset_perturbed(env, rng, kitchen.DEFAULT_INIT_PERTURBATION, seed=3)
        expert.reset(["light switch"])
        completed = []
        for _ in range(60):
            _, reward, terminated, truncated, info = env.step(expert.act(completed))
            completed = info["episode_task_completions"]
            if "light switch" in completed:
                break
        assert completed == ["light switch"]
        assert reward == 1.0  # the D4RL-convention env pays once, on the completing step
        assert env.unwrapped.data.qpos[17] < -0.39  # the lever really moved
    finally:
        env.close()


def test_reset_perturbation_moves_only_the_arm_and_is_undone():
    env = kitchen.make_env()
    try:
        original = env.unwrapped.robot_env.init_qpos.copy()
        obs, _ = kitchen.reset_perturbed(env, np.random.default_rng(0), 0.15, seed=0)
        qpos = env.unwrapped.data.qpos
        assert 0.01 < np.max(np.abs(qpos[:7] - original[:7])) <= 0.15 + 1e-9
        np.testing.assert_allclose(qpos[7:], original[7:])
        np.testing.assert_array_equal(env.unwrapped.robot_env.init_qpos, original)
        assert obs["observation"].shape == (59,)
    finally:
        env.close()


def test_plan_episodes_mixes_proper_subsets_in_random_order():
    tasks = kitchen.DEFAULT_TASKS
    plans = kitchen.plan_episodes(200, 0.3, tasks, seed=1)
    mixed = [p for p in plans if p.mixed]
    assert len(mixed) == 60
    assert all(p.order == tasks for p in plans if not p.mixed)
    assert all(1 <= len(p.order) < len(tasks) and set(p.order) <= set(tasks) for p in mixed)
    assert len({p.order for p in mixed}) > 10  # subsets and orders vary
    assert plans == kitchen.plan_episodes(200, 0.3, tasks, seed=1)


@pytest.mark.parametrize("kwargs, match", [
    ({"tasks": ("microwave", "toaster")}, "tasks must be"),
    ({"episodes": 0}, "episodes must be"),
    ({"mixed_fraction": 1.5}, "mixed_fraction"),
    ({"workers": 0}, "workers must be"),
])
def test_bad_arguments_fail_with_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kitchen.generate_kitchen_dataset(dataset_id="local/kitchen/bad-v0", progress=False, **kwargs)


@pytest.mark.slow
def test_tiny_dataset_round_trips_through_the_project_loader():
    dataset_id = "local/kitchen/tiny-v0"
    tasks = ("light switch", "slide cabinet")
    returned = kitchen.generate_kitchen_dataset(dataset_id=dataset_id, episodes=2, mixed_fraction=0.5,
                                                tasks=tasks, seed=0, progress=False)
    assert returned == dataset_id
    dataset = load_minari_dataset(dataset_id, download=False)
    assert dataset.total_episodes == 2
    assert dataset.storage.metadata["tasks"] == list(tasks)
    returns = []
    for episode in dataset.iterate_episodes():
        states = flatten_observations(episode.observations, "kitchen")
        assert states.shape == (len(episode.actions) + 1, 59)
        assert set(episode.observations["desired_goal"]) == set(tasks)
        assert np.all(np.abs(episode.actions) <= 1.0)
        returns.append(episode.rewards.sum())
    # One full episode (both tasks, terminated) and one mixed episode (one task, then truncated).
    assert sorted(returns) == [1.0, 2.0]

    env = dataset.recover_environment(eval_env=True)
    try:
        assert env.unwrapped.remove_task_when_completed is True
        assert env.unwrapped.terminate_on_tasks_completed is True
        assert env.spec.max_episode_steps == kitchen.MAX_EPISODE_STEPS
        assert env.unwrapped.tasks_to_complete == set(tasks)
    finally:
        env.close()

    with pytest.raises(FileExistsError, match="overwrite"):
        kitchen.generate_kitchen_dataset(dataset_id=dataset_id, episodes=1, tasks=tasks, progress=False)


@pytest.mark.slow
def test_parallel_workers_write_the_same_episodes_as_one_worker():
    settings = dict(episodes=2, mixed_fraction=0.0, tasks=("light switch",), seed=5, progress=False)
    kitchen.generate_kitchen_dataset(dataset_id="local/kitchen/serial-v0", workers=1, **settings)
    kitchen.generate_kitchen_dataset(dataset_id="local/kitchen/parallel-v0", workers=2, **settings)
    serial = load_minari_dataset("local/kitchen/serial-v0", download=False)
    parallel = load_minari_dataset("local/kitchen/parallel-v0", download=False)
    for a, b in zip(serial.iterate_episodes(), parallel.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(a.observations["observation"], b.observations["observation"])
        np.testing.assert_array_equal(a.actions, b.actions)
