"""benchmarks/kitchen_reach.py: contact points and closest approaches (a fake hand: the first 3 dims)."""

import importlib.util
import os

import numpy as np

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                     "kitchen_reach.py")
_spec = importlib.util.spec_from_file_location("kitchen_reach", _PATH)
kitchen_reach = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kitchen_reach)

LIGHT = kitchen_reach.OBJECT_INDEX["light switch"]
KETTLE = kitchen_reach.OBJECT_INDEX["kettle"]


def hand(observations):
    return observations[:, :3]


def episode(steps, touch_at, target, task=LIGHT, offset=0.0):
    """The hand moves in a straight line to `target` (+ offset) and stays; the task's object moves
    from `touch_at` on."""
    obs = np.zeros((steps, 59))
    path = np.linspace(0.0, 1.0, touch_at)[:, None] * (np.asarray(target) + offset)
    obs[:touch_at, :3] = path
    obs[touch_at:, :3] = path[-1]
    obs[touch_at:, task] = -0.3
    return obs


def test_first_movement_is_the_first_step_past_the_threshold():
    obs = np.zeros((10, 59))
    obs[6:, LIGHT] = -0.05
    obs[4, LIGHT] = -0.01  # below the threshold
    assert kitchen_reach.first_movement(obs, "light switch") == 6
    assert kitchen_reach.first_movement(obs, "microwave") is None


def test_contact_point_is_the_hand_one_step_before_the_object_moves():
    target = np.array([0.3, 0.6, 2.2])
    demos = [episode(40, 20, target), episode(40, 25, target)]
    points, approaches = kitchen_reach.contact_points(demos, hand)
    assert set(points) == {"light switch"}  # no other object moves
    np.testing.assert_allclose(points["light switch"], target)
    np.testing.assert_allclose(approaches["light switch"], 0.0, atol=1e-12)


def test_policy_approaches_count_only_episodes_that_reached_the_task():
    points = {"kettle": np.zeros(3), "light switch": np.array([0.3, 0.6, 2.2])}
    near = episode(60, 30, points["light switch"], offset=0.02)  # stops 2-3.5 cm off
    far = episode(60, 30, points["light switch"], offset=0.1)
    rows = kitchen_reach.policy_approaches(
        [near, far, near], [{"kettle", "light switch"}, {"kettle"}, set()], points, hand)
    light = rows["light switch"]
    assert light.shape == (2, 2)  # the third episode never finished the kettle
    assert light[0, 0] < 0.05 < light[1, 0]
    np.testing.assert_array_equal(light[:, 1], [1.0, 0.0])
    assert rows["kettle"].shape == (0, 2)  # none finished the microwave, the task before it
    table = kitchen_reach.format_table({t: np.array([0.01]) for t in points}, rows)
    assert "0/0 / 1/1 / 0/1" in table  # light: done at 3.5 cm, missed at 17 cm


def test_plan_hand_distances_skip_padded_steps_and_table_reads_them():
    true = np.zeros((2, 10, 59))
    planned = true.copy()
    planned[0, :, 0] = 0.02  # 2 cm off everywhere
    planned[1, :, 1] = np.linspace(0.0, 0.09, 10)  # drifts off 1 cm per step
    mask = np.ones((2, 10), bool)
    mask[1, 5:] = False  # padded past the episode's end
    d = kitchen_reach.plan_hand_distances(true, planned, mask, hand)
    np.testing.assert_allclose(d[0], 0.02)
    np.testing.assert_allclose(d[1, :5], [0.0, 0.01, 0.02, 0.03, 0.04], atol=1e-12)
    assert np.isnan(d[1, 5:]).all()
    table = kitchen_reach.format_plan_table({"plan": d})
    # first step: 2 and 0 cm; steps 1-8: eight 2s and 0-4 cm; all: ten 2s and 0-4 cm
    assert table.splitlines()[1].endswith("| 1.0 / 1.8 | 2.0 / 2.8 | 2.0 / 2.6")
