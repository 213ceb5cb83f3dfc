"""MuJoCo locomotion: `experiments/locomotion.py:<env>,<data>[,size]`.

Envs `halfcheetah` (default) | `hopper` | `walker2d`; data `medium` (default) | `medium-replay` |
`expert` (`mujoco/<env>/<data>-v0`); size `quicktest` | `cpu`.
"""

from mage_jax import configs

ENVS = ("halfcheetah", "hopper", "walker2d")
DATA = ("medium", "medium-replay", "expert")


def get_config(arg=None):
    v = configs.parse_variant(arg, {"env": ENVS, "data": DATA},
                              {"env": "halfcheetah", "data": "medium"})
    c = configs.base_config()
    c.data.dataset_id = f"mujoco/{v['env']}/{v['data']}-v0"
    c.data.obs_family = "box"
    c.data.rtg_scale = 1000.0  # episode returns are in the thousands
    c.eval.target_return = -1.0  # the best episode return in the dataset
    c.eval.num_seeds = 10
    return configs.finalize(c, v["size"])
