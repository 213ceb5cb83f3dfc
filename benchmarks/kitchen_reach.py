"""Where a kitchen policy's hand goes: its closest approach to the point where each task is touched.

    python benchmarks/kitchen_reach.py --config=experiments/kitchen.py:scripted,cpu --config.seed=0 \
        --workdir=runs/kitchen_scripted_cpu

Pass the run's own --config and overrides, as for diagnose.py. A task's contact point is the mean
end-effector position over the demonstrations one step before the task's object first moves. For the
demonstrations and for one evaluation of the saved run (config.eval options, stage-3 head when there
is one), the table gives each task's closest approach of the end effector to that point, taken over
the episodes that completed the task before it in the canonical order (all episodes for the first),
and how often the task was completed at each distance. A second table gives how far from the true
hand position the plans put the hand, on the run's held-out windows: the autoencoder's decoding of
the encoded true future (the most a perfect generator could give) and of a plan sampled from the
window's own (R_0, s_0). Nothing is written to the run.
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym
import jax
import mujoco
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mage_jax.data.observations import flatten_observations  # noqa: E402
from mage_jax.datasets.kitchen_expert import CANONICAL_ORDER  # noqa: E402
from mage_jax.evaluation.envs import make_eval_envs  # noqa: E402
from mage_jax.evaluation.rollout import evaluate_policy  # noqa: E402
from mage_jax.evaluation.run import target_return  # noqa: E402
from mage_jax.evaluation.sharded import shard_policy  # noqa: E402
from mage_jax.models.sampling import sampling_options  # noqa: E402
from mage_jax.training import train  # noqa: E402
from mage_jax.training.head import generated_plans  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The run's config file[:variant].", lock_config=True)
flags.DEFINE_string("workdir", None, "The kitchen run to examine.")
flags.mark_flags_as_required(["config", "workdir"])

ROBOT_QPOS = 9  # observation[:9]: arm joints and fingers, the simulator's qpos[:9]
# Index in the 59-D observation of a coordinate of each task's object that moves when it is touched.
OBJECT_INDEX = {"microwave": 31, "kettle": 33, "light switch": 26, "slide cabinet": 28}
MOVED = 0.02  # change from its first value that counts as the object moving
LOOKBACK = 30  # demonstration steps before the first movement searched for the closest approach
BINS = (0.0, 0.03, 0.05, np.inf)  # metres
PLAN_STEPS = {"first step": slice(0, 1), "steps 1-8": slice(0, 8), "all steps": slice(None)}


class HandPositions:
    """End-effector positions from observations, by forward kinematics of FrankaKitchen-v1."""

    def __init__(self):
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        self._env = gym.make("FrankaKitchen-v1")
        self._env.reset(seed=0)
        self.model, self.data = self._env.unwrapped.model, self._env.unwrapped.data
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        out = np.empty((len(observations), 3))
        for i, robot_qpos in enumerate(observations[:, :ROBOT_QPOS]):
            self.data.qpos[:ROBOT_QPOS] = robot_qpos
            mujoco.mj_kinematics(self.model, self.data)
            out[i] = self.data.site_xpos[self._site]
        return out


def first_movement(observations: np.ndarray, task: str) -> int | None:
    """The first step at which the task's object has moved, or None."""
    column = observations[:, OBJECT_INDEX[task]]
    moved = np.flatnonzero(np.abs(column - column[0]) > MOVED)
    return int(moved[0]) if moved.size else None


def contact_points(episodes: list[np.ndarray], hand: HandPositions) -> tuple[dict, dict]:
    """Per task: the mean hand position one step before the object first moves, and the
    demonstrations' closest approach to it in the LOOKBACK steps before (one per touching episode)."""
    touches = {task: [] for task in OBJECT_INDEX}
    for observations in episodes:
        for task in OBJECT_INDEX:
            step = first_movement(observations, task)
            if step is not None and step > 0:
                touches[task].append(observations[max(0, step - LOOKBACK):step])
    points, approaches = {}, {}
    for task, windows in touches.items():
        if not windows:
            continue
        positions = [hand(w) for w in windows]  # forward kinematics once per window
        points[task] = np.mean([p[-1] for p in positions], axis=0)
        approaches[task] = np.array([np.linalg.norm(p - points[task], axis=1).min() for p in positions])
    return points, approaches


def policy_approaches(trajectories: list[np.ndarray], completed: list[set], points: dict,
                      hand: HandPositions) -> dict:
    """Per task: (closest approach, completed) of each episode that completed the task before it."""
    out = {}
    for index, task in enumerate(CANONICAL_ORDER):
        if task not in points:
            continue
        previous = CANONICAL_ORDER[index - 1] if index else None
        rows = [(np.linalg.norm(hand(states) - points[task], axis=1).min(), task in done)
                for states, done in zip(trajectories, completed, strict=True)
                if previous is None or previous in done]
        out[task] = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return out


def format_table(data_approaches: dict, approaches: dict) -> str:
    lines = ["task             | demonstrations: median / p90 closest (cm) | policy: episodes, "
             "median closest (cm) | completed at < 3 / 3-5 / > 5 cm"]
    for task, rows in approaches.items():
        demo = data_approaches[task] * 100
        bins = []
        for low, high in zip(BINS[:-1], BINS[1:], strict=False):
            chosen = rows[(rows[:, 0] >= low) & (rows[:, 0] < high)]
            bins.append(f"{int(chosen[:, 1].sum())}/{len(chosen)}")
        median = f"{np.median(rows[:, 0]) * 100:.1f}" if len(rows) else "-"
        lines.append(f"{task:<16} | {np.median(demo):.1f} / {np.percentile(demo, 90):.1f} | "
                     f"{len(rows)}, {median} | {' / '.join(bins)}")
    return "\n".join(lines)


def plan_hand_distances(true_states: np.ndarray, planned_states: np.ndarray, mask: np.ndarray,
                        hand) -> np.ndarray:
    """(B, H) distance between the hand of the planned and of the true (B, H, S) states; NaN on
    padded steps (`mask` False)."""
    def hands(states):
        return hand(states.reshape(-1, states.shape[-1])).reshape(*states.shape[:2], 3)

    return np.where(mask, np.linalg.norm(hands(planned_states) - hands(true_states), axis=-1), np.nan)


def format_plan_table(distances: dict) -> str:
    lines = ["held-out windows: the plan's hand against the true one, median / p90 (cm) | "
             + " | ".join(PLAN_STEPS)]
    for name, d in distances.items():
        cells = []
        for steps in PLAN_STEPS.values():
            values = d[:, steps][~np.isnan(d[:, steps])] * 100
            cells.append(f"{np.median(values):.1f} / {np.percentile(values, 90):.1f}")
        lines.append(f"{name:<40} | " + " | ".join(cells))
    return "\n".join(lines)


def plan_precision(ctx, config, params: dict, hand: HandPositions) -> dict:
    """Hand distances (B, H) on the held-out windows for the encoded true future and a sampled plan."""
    ae_model, tf_model = ctx.ae_model, ctx.tf_model
    ae_params, tf_params = params["autoencoder"], params["transformer"]
    batch = ctx.val_batch
    segments = batch["segments"]
    f_true = ae_model.apply(ae_params, ae_model.apply(ae_params, segments, method="encode"),
                            method="quantize").f_hat
    f_plan = generated_plans(tf_model, ae_model, tf_params, ae_params, batch,
                             jax.random.PRNGKey(config.seed), sampling_options(config.sampling))

    def states_of(x):
        x = np.asarray(x)[..., 1:]  # drop the return-to-go channel
        return ctx.stats.denormalize(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    true, mask = states_of(segments), np.asarray(batch["mask"], bool)
    return {name: plan_hand_distances(true, states_of(ae_model.apply(ae_params, f, segments[:, 0, 0],
                                                                     method="decode")), mask, hand)
            for name, f in (("autoencoder: encoded true future", f_true),
                            ("sampled plan (eval options)", f_plan))}


def recorded_evaluation(ctx, config, policy: train.Policy) -> tuple[list[np.ndarray], list[set]]:
    """One evaluation of the saved run; per seed, the observations it acted on and its tasks done."""
    sharded, seen = shard_policy(policy.act, policy.params, ctx.mesh), []

    def recording(observations, returns_to_go, key):
        seen.append(np.array(observations))
        return sharded(observations, returns_to_go, key)

    env_spec = make_eval_envs(ctx.dataset, config.data.obs_family, multi=config.eval.multi)
    result = evaluate_policy(recording, env_spec, num_seeds=config.eval.num_seeds,
                             seed_offset=config.eval.seed_offset, obs_family=config.data.obs_family,
                             target_return=target_return(config, ctx.meta),
                             key=jax.random.PRNGKey(config.eval.seed_offset))
    steps = np.stack(seen)  # (steps, seeds, S); a finished seed's later rows are a new episode
    trajectories = [steps[:length, i] for i, length in enumerate(result.lengths)]
    return trajectories, [set(done) for done in result.completed_tasks]


def main(argv):
    del argv
    config = FLAGS.config
    if config.data.obs_family != "kitchen":
        raise app.UsageError("kitchen_reach.py needs a kitchen run (config.data.obs_family='kitchen')")
    if config.eval.action_chunk != 1:  # the replay records one observation per policy call
        raise app.UsageError("kitchen_reach.py replays one action per plan (config.eval.action_chunk=1)")
    ctx, policy, _ = train.load_policy(config, FLAGS.workdir, out_dir=os.path.join(FLAGS.workdir, "diagnose"))
    hand = HandPositions()
    demos = [flatten_observations(e.observations, "kitchen") for e in ctx.dataset.iterate_episodes()]
    points, data_approaches = contact_points(demos, hand)
    trajectories, completed = recorded_evaluation(ctx, config, policy)
    print(f"\n{len(demos)} demonstrations; {len(trajectories)} evaluation episodes of {FLAGS.workdir}")
    print(format_table(data_approaches, policy_approaches(trajectories, completed, points, hand)))
    if ctx.val_batch is not None:
        print(format_plan_table(plan_precision(ctx, config, policy.params, hand)))


if __name__ == "__main__":
    app.run(main)
