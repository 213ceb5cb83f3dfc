"""MuJoCo locomotion: `experiments/locomotion.py:<env>,<data>[,size]`.

Envs `halfcheetah` (default) | `hopper` | `walker2d`; data `medium` (default) | `medium-replay` |
`expert` (`mujoco/<env>/<data>-v0`); `local` instead records random-policy episodes on `<Env>-v5` in
the `mujoco/<env>/*-v0` layout as `local/<env>/random-v0` (on first use, with
`mage_jax.datasets.record`); size `quicktest` | `cpu`.
"""

from mage_jax import configs

ENVS = ("halfcheetah", "hopper", "walker2d")
DATA = ("medium", "medium-replay", "expert")
ENV_IDS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
# Recorded episodes: random hoppers and walkers fall within ~25 steps, cheetahs run all 1000.
LOCAL_EPISODES = {"quicktest": {"halfcheetah": 3, "hopper": 100, "walker2d": 100},
                  "": {"halfcheetah": 100, "hopper": 4000, "walker2d": 4000}}
LOCAL_REF_EPISODES = {"quicktest": 5, "": 100}  # random eval episodes for ref_min_score


def get_config(arg=None):
    v = configs.parse_variant(arg, {"env": ENVS, "data": DATA}, {"env": "halfcheetah"},
                              flags=("local",))
    c = configs.base_config()
    if v["local"]:
        if "data" in v:
            raise ValueError(f"locomotion variant {arg!r}: `local` records its own random-policy data; "
                             f"drop {v['data']!r}")
        small = v["size"] == "quicktest"
        c.data.dataset_id = f"local/{v['env']}/random{'-small' if small else ''}-v0"
        c.data.generator = "record"
        c.data.generator_kwargs.env_id = ENV_IDS[v["env"]]  # env the episodes are recorded in
        c.data.generator_kwargs.policy = "random"  # recording policy
        c.data.generator_kwargs.episodes = LOCAL_EPISODES["quicktest" if small else ""][v["env"]]  # episodes
        c.data.generator_kwargs.ref_episodes = LOCAL_REF_EPISODES["quicktest" if small else ""]  # ref_min
    else:
        c.data.dataset_id = f"mujoco/{v['env']}/{v.get('data', 'medium')}-v0"
    c.data.obs_family = "box"
    c.data.rtg_scale = 1000.0  # episode returns are in the thousands
    c.eval.target_return = -1.0  # the best episode return in the dataset
    c.eval.num_seeds = 10
    return configs.finalize(c, v["size"])
