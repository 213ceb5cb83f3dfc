"""Adroit hand: `experiments/adroit.py:<task>,<data>[,size]`.

Tasks `pen` (default) | `hammer` | `door` | `relocate`; data `human` (default) | `cloned` | `expert`
(`D4RL/<task>/<data>-v2`); `local` instead records random-policy episodes on `AdroitHand<Task>-v1` in
the `D4RL/<task>/*-v2` layout as `local/<task>/random-v0` (on first use, with
`mage_jax.datasets.record`); size `quicktest` | `cpu`.
"""

from mage_jax import configs

TASKS = ("pen", "hammer", "door", "relocate")
DATA = ("human", "cloned", "expert")
LOCAL_EPISODES = {"quicktest": 20, "": 500}  # recorded episodes (pen: 100 steps, others 200)
LOCAL_REF_EPISODES = {"quicktest": 5, "": 100}  # random eval episodes for ref_min_score


def get_config(arg=None):
    v = configs.parse_variant(arg, {"task": TASKS, "data": DATA}, {"task": "pen"}, flags=("local",))
    c = configs.base_config()
    if v["local"]:
        if "data" in v:
            raise ValueError(f"adroit variant {arg!r}: `local` records its own random-policy data; "
                             f"drop {v['data']!r}")
        small = v["size"] == "quicktest"
        c.data.dataset_id = f"local/{v['task']}/random{'-small' if small else ''}-v0"
        c.data.generator = "record"
        c.data.generator_kwargs.env_id = f"AdroitHand{v['task'].capitalize()}-v1"  # recording env
        c.data.generator_kwargs.policy = "random"  # recording policy
        c.data.generator_kwargs.episodes = LOCAL_EPISODES["quicktest" if small else ""]  # episodes
        c.data.generator_kwargs.ref_episodes = LOCAL_REF_EPISODES["quicktest" if small else ""]  # ref_min
    else:
        c.data.dataset_id = f"D4RL/{v['task']}/{v.get('data', 'human')}-v2"
    c.data.obs_family = "box"
    c.data.rtg_scale = 1000.0  # episode returns are in the thousands
    c.eval.target_return = -1.0  # the best episode return in the dataset
    return configs.finalize(c, v["size"])
