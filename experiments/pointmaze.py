"""PointMaze (D4RL maze2d on gymnasium-robotics): `experiments/pointmaze.py:<variant>`.

Variants, comma-separated: maze `umaze` | `medium` (default) | `large`; `dense` reward; `local` uses
the project's generated `local/pointmaze/<maze>-v1` datasets (created on first use; D4RL's recipe
except that each reached goal is held for HOLD_STEPS steps) instead of `D4RL/pointmaze/*-v2`;
with `local`, `d4rl` generates D4RL's own recipe instead (goals redrawn on arrival, `-v0` ids) and
`data1` | `data2` | ... picks the generator seed (default `data0`: ids without a seed suffix, e.g.
`local/pointmaze/medium-seed1-v1` for `data1`), so a result can be checked on a second dataset of
the same recipe; `multi` evaluates with a random start and goal per episode (Multi2D); size
`quicktest` | `cpu` (default: accelerator size).
"""

from mage_jax import configs

MAZES = ("umaze", "medium", "large")
DATA_SEEDS = tuple(f"data{i}" for i in range(10))  # generator seed of a `local` dataset
LOCAL_STEPS = {"umaze": 300_000, "medium": 1_000_000, "large": 1_000_000}  # generated dataset sizes
QUICKTEST_STEPS = 30_000  # `quicktest` runs use a small dataset of their own (id suffix '-small')
# D4RL draws a new goal the moment the ball arrives, so its data never shows a ball staying at the
# goal, which is what the eval env rewards: MAGE reached the goal as fast as the controller but left
# it again (docs/decisions.md#pointmaze-hold-steps).
HOLD_STEPS = 20
# Classifier-free guidance per maze where the return is not bootstrapped: guided plans reach the goal
# sooner on medium but overshoot it on umaze and mislead the under-trained large model
# (docs/decisions.md#pointmaze-guidance).
GUIDANCE = {"umaze": 0.0, "medium": 1.0, "large": 0.0}
# Bootstrap the return-to-go of goals held at truncation (local data only), per maze: see get_config
# and docs/decisions.md#pointmaze-rtg-bootstrap.
RTG_BOOTSTRAP = {"umaze": True, "medium": False, "large": True}
# With the bootstrapped value, guidance pushes toward holding the goal instead (umaze gains on every
# training seed; docs/decisions.md#pointmaze-guidance-bootstrapped). Used only where the bootstrap is on.
GUIDANCE_BOOTSTRAPPED = {"umaze": 2.0, "medium": 1.0, "large": 0.0}
# Whether stage 3 trains an acting head on generated plans; without it stage 1's head acts (on the
# bootstrapped, guided umaze it holds the goal better: docs/decisions.md#pointmaze-stage3-head).
# Used only where the bootstrap is on.
STAGE3_HEAD = {"umaze": False, "medium": True, "large": True}
# The `cpu` budget (autoencoder steps, stage-2 steps), chosen to fit 30 minutes per run on 2 cores.
# Large is limited by stage 2, so half its autoencoder steps go there
# (docs/decisions.md#pointmaze-cpu-steps).
CPU_STEPS = {"umaze": (6_000, 4_000), "medium": (6_000, 4_000), "large": (3_000, 6_000)}
# Stage 2's peak learning rate at the `cpu` size. Large's generator is still under-trained at the end of
# its budget, and 1e-3 lowered its held-out cross-entropy and acting error
# (docs/decisions.md#pointmaze-cpu-stage2-lr). Umaze and medium: not measured.
CPU_STAGE2_LR = {"umaze": 5e-4, "medium": 5e-4, "large": 1e-3}


def get_config(arg=None):
    v = configs.parse_variant(arg, {"maze": MAZES, "data_seed": DATA_SEEDS},
                              {"maze": "medium", "data_seed": "data0"},
                              flags=("dense", "local", "multi", "d4rl"))
    c = configs.base_config()
    suffix = "-dense" if v["dense"] else ""
    data_seed = int(v["data_seed"].removeprefix("data"))
    if (v["d4rl"] or data_seed) and not v["local"]:
        raise ValueError(f"config variant {arg!r}: 'd4rl' and 'dataN' choose how a local dataset is "
                         "generated; add 'local' (the public D4RL/pointmaze data has one version)")
    if v["local"]:
        small = v["size"] == "quicktest"
        c.data.dataset_id = (f"local/pointmaze/{v['maze']}{suffix}{'-small' if small else ''}"
                             f"{f'-seed{data_seed}' if data_seed else ''}-v{0 if v['d4rl'] else 1}")
        c.data.generator = "pointmaze"
        c.data.generator_kwargs.maze = v["maze"]  # maze of the generated dataset
        c.data.generator_kwargs.steps = QUICKTEST_STEPS if small else LOCAL_STEPS[v["maze"]]  # env steps
        c.data.generator_kwargs.dense = v["dense"]  # dense reward variant
        # steps each reached goal is held (0 = D4RL's recipe: a new goal the moment the ball arrives)
        c.data.generator_kwargs.hold_steps = 0 if v["d4rl"] else HOLD_STEPS
        c.data.generator_kwargs.seed = data_seed  # generator seed (controller, noise and goals)
    else:
        c.data.dataset_id = f"D4RL/pointmaze/{v['maze']}{suffix}-v2"
    c.data.obs_family = "maze"
    # Episodes end at each success, so an undiscounted sparse return-to-go is constant: a discounted
    # one tells the model how far the goal is.
    c.data.rtg_discount = 0.99
    # Held goals (local data) end truncated mid-hold: without a bootstrap the return shrinks along the
    # hold, and the learned value rated a settled ball at the goal below a fast one passing through.
    # Bootstrapped, the goal is worth 1 / (1 - 0.99) at every held step, like the continuing eval env
    # (docs/decisions.md#pointmaze-rtg-bootstrap).
    # D4RL's recipe (`d4rl`) never holds a goal, so it has nothing to bootstrap.
    bootstrap = v["local"] and not v["d4rl"] and RTG_BOOTSTRAP[v["maze"]]
    c.data.rtg_bootstrap = bootstrap
    # Sparse: 1 per step at the goal, so held goals give discounted returns up to ~19 (bootstrapped:
    # 100, scaled to 2, near the unbootstrapped range).
    c.data.rtg_scale = 50.0 if bootstrap else 10.0 if v["dense"] or v["local"] else 1.0
    c.data.horizon = 128
    c.model.scales = (1, 2, 4, 6, 8, 12, 16, 32)  # T_lat = 128 / 4
    c.eval.target_return = 1.0 if not v["dense"] else 10.0  # used only with learned_target=False
    # Condition on the best return the data shows from the current state: a fixed "goal now" target is
    # out of distribution away from the goal (docs/decisions.md#pointmaze-learned-target).
    c.sampling.learned_target = True
    c.sampling.cfg_scale = (GUIDANCE_BOOTSTRAPPED if bootstrap else GUIDANCE)[v["maze"]]
    if bootstrap and not STAGE3_HEAD[v["maze"]]:
        c.head.acts = False  # stage 1's head acts
    c.eval.decrement_return = False  # a discounted RTG is a time-to-goal code, not a budget
    c.eval.multi = v["multi"]
    ae_steps, tf_steps = CPU_STEPS[v["maze"]]
    cpu = {"stage1.num_steps": ae_steps, "stage2.num_steps": tf_steps, "stage2.lr": CPU_STAGE2_LR[v["maze"]],
           "train.eval_every": tf_steps // 2}
    return configs.finalize(c, v["size"], cpu=cpu)
