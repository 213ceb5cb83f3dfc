"""Adroit hand: `experiments/adroit.py:<task>,<data>[,size]`.

Tasks `pen` (default) | `hammer` | `door` | `relocate`; data `human` (default) | `cloned` | `expert`
(`D4RL/<task>/<data>-v2`); size `quicktest` | `cpu`.
"""

from mage_jax import configs

TASKS = ("pen", "hammer", "door", "relocate")
DATA = ("human", "cloned", "expert")


def get_config(arg=None):
    v = configs.parse_variant(arg, {"task": TASKS, "data": DATA}, {"task": "pen", "data": "human"})
    c = configs.base_config()
    c.data.dataset_id = f"D4RL/{v['task']}/{v['data']}-v2"
    c.data.obs_family = "box"
    c.data.rtg_scale = 1000.0  # episode returns are in the thousands
    c.eval.target_return = -1.0  # the best episode return in the dataset
    return configs.finalize(c, v["size"])
