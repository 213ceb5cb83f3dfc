"""PointMaze (D4RL maze2d on gymnasium-robotics): `experiments/pointmaze.py:<variant>`.

Variants, comma-separated: maze `umaze` | `medium` (default) | `large`; `dense` reward; `local` uses
the project's generated `local/pointmaze/<maze>-v0` datasets (created on first use) instead of
`D4RL/pointmaze/*-v2`; `multi` evaluates with a random start and goal per episode (Multi2D); size
`quicktest` | `cpu` (default: accelerator size).
"""

from mage_jax import configs

MAZES = ("umaze", "medium", "large")
LOCAL_STEPS = {"umaze": 300_000, "medium": 1_000_000, "large": 1_000_000}  # generated dataset sizes
QUICKTEST_STEPS = 30_000  # `quicktest` runs use a small dataset of their own (id suffix '-small')


def get_config(arg=None):
    v = configs.parse_variant(arg, {"maze": MAZES}, {"maze": "medium"},
                              flags=("dense", "local", "multi"))
    c = configs.base_config()
    suffix = "-dense" if v["dense"] else ""
    if v["local"]:
        small = v["size"] == "quicktest"
        c.data.dataset_id = f"local/pointmaze/{v['maze']}{suffix}{'-small' if small else ''}-v0"
        c.data.generator = "pointmaze"
        c.data.generator_kwargs.maze = v["maze"]  # maze of the generated dataset
        c.data.generator_kwargs.steps = QUICKTEST_STEPS if small else LOCAL_STEPS[v["maze"]]  # env steps
        c.data.generator_kwargs.dense = v["dense"]  # dense reward variant
        c.data.generator_kwargs.hold_steps = 0  # steps each reached goal is held (0 = D4RL's recipe)
    else:
        c.data.dataset_id = f"D4RL/pointmaze/{v['maze']}{suffix}-v2"
    c.data.obs_family = "maze"
    # Episodes end at each success, so an undiscounted sparse return-to-go is constant: a discounted
    # one tells the model how far the goal is.
    c.data.rtg_discount = 0.99
    c.data.rtg_scale = 1.0 if not v["dense"] else 10.0
    c.data.horizon = 128
    c.model.scales = (1, 2, 4, 6, 8, 12, 16, 32)  # T_lat = 128 / 4
    c.eval.target_return = 1.0 if not v["dense"] else 10.0  # goal reached at once: the best RTG
    c.eval.decrement_return = False  # a discounted RTG is a time-to-goal code, not a budget
    c.eval.multi = v["multi"]
    return configs.finalize(c, v["size"])
