"""AntMaze: `experiments/antmaze.py:<variant>`.

Variants: dataset `umaze` (default) | `umaze-diverse` | `medium-play` | `medium-diverse` |
`large-play` | `large-diverse`; size `quicktest` | `cpu`.
"""

from mage_jax import configs

DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")


def get_config(arg=None):
    v = configs.parse_variant(arg, {"dataset": DATASETS}, {"dataset": "umaze"})
    c = configs.base_config()
    c.data.dataset_id = f"D4RL/antmaze/{v['dataset']}-v1"
    c.data.obs_family = "maze"  # observation (27) ++ desired_goal (2)
    c.data.rtg_discount = 0.99  # sparse goal reward: the discounted RTG encodes time to the goal
    c.data.horizon = 128
    c.model.scales = (1, 2, 4, 6, 8, 12, 16, 32)  # T_lat = 128 / 4
    c.eval.target_return = 1.0  # reach the goal as soon as possible
    c.eval.decrement_return = False  # RTG is a time-to-goal code
    return configs.finalize(c, v["size"])
