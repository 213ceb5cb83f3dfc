"""AntMaze: `experiments/antmaze.py:<variant>`.

Variants: dataset `umaze` (default) | `umaze-diverse` | `medium-play` | `medium-diverse` |
`large-play` | `large-diverse` (`D4RL/antmaze/*-v1`); `local` records random-policy episodes on
`AntMaze_UMaze-v4` in the `D4RL/antmaze/*-v1` layout as `local/antmaze/umaze-random-v0` (on first use,
with `mage_jax.datasets.record`); size `quicktest` | `cpu`. A random ant never reaches the goal: the
local data exercises every code path, not the score.
"""

from mage_jax import configs

DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
LOCAL_ENV = "AntMaze_UMaze-v4"  # the env D4RL/antmaze/umaze-v1 was recorded in
LOCAL_EPISODES = {"quicktest": 4, "": 300}  # recorded 700-step episodes per size ('' = cpu and default)
LOCAL_REF_EPISODES = {"quicktest": 4, "": 20}  # random eval episodes for ref_min_score


def get_config(arg=None):
    v = configs.parse_variant(arg, {"dataset": DATASETS}, {}, flags=("local",))
    c = configs.base_config()
    if v["local"]:
        if v.get("dataset", "umaze") != "umaze":
            raise ValueError(f"antmaze variant {arg!r}: `local` records the umaze only; drop "
                             f"{v['dataset']!r}")
        small = v["size"] == "quicktest"
        c.data.dataset_id = f"local/antmaze/umaze-random{'-small' if small else ''}-v0"
        c.data.generator = "record"
        c.data.generator_kwargs.env_id = LOCAL_ENV  # env the episodes are recorded in
        c.data.generator_kwargs.policy = "random"  # recording policy
        c.data.generator_kwargs.episodes = LOCAL_EPISODES["quicktest" if small else ""]  # episodes
        c.data.generator_kwargs.ref_episodes = LOCAL_REF_EPISODES["quicktest" if small else ""]  # ref_min
    else:
        c.data.dataset_id = f"D4RL/antmaze/{v.get('dataset', 'umaze')}-v1"
    c.data.obs_family = "antmaze"  # achieved_goal (2: x-y) ++ observation (27) ++ desired_goal (2)
    c.data.rtg_discount = 0.99  # sparse goal reward: the discounted RTG encodes time to the goal
    c.data.horizon = 128
    c.model.scales = (1, 2, 4, 6, 8, 12, 16, 32)  # T_lat = 128 / 4
    c.eval.target_return = 1.0  # reach the goal as soon as possible
    c.eval.decrement_return = False  # RTG is a time-to-goal code
    return configs.finalize(c, v["size"])
