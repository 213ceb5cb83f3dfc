"""PointMaze (D4RL maze2d on gymnasium-robotics): `experiments/pointmaze.py:<variant>`.

Variants, comma-separated: maze `umaze` | `medium` (default) | `large`; `dense` reward; `local` uses
the project's generated `local/pointmaze/<maze>-v1` datasets (created on first use; D4RL's recipe
except that each reached goal is held for HOLD_STEPS steps) instead of `D4RL/pointmaze/*-v2`;
`multi` evaluates with a random start and goal per episode (Multi2D); size `quicktest` | `cpu`
(default: accelerator size).
"""

from mage_jax import configs

MAZES = ("umaze", "medium", "large")
LOCAL_STEPS = {"umaze": 300_000, "medium": 1_000_000, "large": 1_000_000}  # generated dataset sizes
QUICKTEST_STEPS = 30_000  # `quicktest` runs use a small dataset of their own (id suffix '-small')
# D4RL draws a new goal the moment the ball arrives, so its data never shows a ball staying at the
# goal, which is what the eval env rewards: MAGE reached the goal as fast as the controller but left
# it again (medium: normalised 34 with success 100%; with held goals 86, benchmarks/QUALITY.md).
HOLD_STEPS = 20
# Classifier-free guidance per maze, measured on each maze's cpu-size checkpoints over 100 evaluation
# seeds (benchmarks/QUALITY.md): guided plans reach the goal sooner on medium (cfg 1 over 0: +5.5, +10.0
# and -2.4 on three training seeds) but overshoot it on umaze (cfg 0 over 1: +8.8) and mislead the
# still under-trained large model (cfg 0 over 1: +8.3, success 47% against 30%).
GUIDANCE = {"umaze": 0.0, "medium": 1.0, "large": 0.0}
# Bootstrap the return-to-go of goals held at truncation (local data only), per maze: see get_config.
RTG_BOOTSTRAP = {"umaze": True, "medium": False, "large": True}
# With the bootstrapped value, guidance pushes toward holding the goal instead: umaze gains on every
# training seed (1 over 0: +5 to +12, 2 over 1: +1 to +5). Used only where the bootstrap is on.
GUIDANCE_BOOTSTRAPPED = {"umaze": 2.0, "medium": 1.0, "large": 0.0}
# Whether stage 3 trains an acting head on generated plans; without it stage 1's head acts (on the
# bootstrapped, guided umaze it holds the goal better: five seeds 91.4 -> 94.4, weakest 73.6 -> 86.3).
# Used only where the bootstrap is on.
STAGE3_HEAD = {"umaze": False, "medium": True, "large": True}
# The `cpu` budget (autoencoder steps, stage-2 steps), measured to fit 30 minutes per run on 2 cores
# (medium: 26 min end to end). Large is limited by stage 2 (8,000 steps on the same autoencoder:
# 16 -> 43), so half its autoencoder steps go there: 24-27 min, mean score 23 -> 36 (QUALITY.md).
CPU_STEPS = {"umaze": (6_000, 4_000), "medium": (6_000, 4_000), "large": (3_000, 6_000)}
# Stage 2's peak learning rate at the `cpu` size. Large's generator is still under-trained at the end of
# its budget: on the same three autoencoders, 1e-3 against 5e-4 lowered the held-out cross-entropy and
# acting error on each and scored +8.7, +51.9 and -19.6 (mean 36.4 -> 50.1; benchmarks/QUALITY.md).
# Umaze and medium: not measured.
CPU_STAGE2_LR = {"umaze": 5e-4, "medium": 5e-4, "large": 1e-3}


def get_config(arg=None):
    v = configs.parse_variant(arg, {"maze": MAZES}, {"maze": "medium"},
                              flags=("dense", "local", "multi"))
    c = configs.base_config()
    suffix = "-dense" if v["dense"] else ""
    if v["local"]:
        small = v["size"] == "quicktest"
        c.data.dataset_id = f"local/pointmaze/{v['maze']}{suffix}{'-small' if small else ''}-v1"
        c.data.generator = "pointmaze"
        c.data.generator_kwargs.maze = v["maze"]  # maze of the generated dataset
        c.data.generator_kwargs.steps = QUICKTEST_STEPS if small else LOCAL_STEPS[v["maze"]]  # env steps
        c.data.generator_kwargs.dense = v["dense"]  # dense reward variant
        c.data.generator_kwargs.hold_steps = HOLD_STEPS  # steps each reached goal is held (0 = D4RL)
    else:
        c.data.dataset_id = f"D4RL/pointmaze/{v['maze']}{suffix}-v2"
    c.data.obs_family = "maze"
    # Episodes end at each success, so an undiscounted sparse return-to-go is constant: a discounted
    # one tells the model how far the goal is.
    c.data.rtg_discount = 0.99
    # Held goals (local data) end truncated mid-hold: without a bootstrap the return shrinks along the
    # hold, and the learned value rated a settled ball at the goal (V 1.4 against a true 0.35) below a
    # fast one passing through. Bootstrapped, the goal is worth 1 / (1 - 0.99) at every held step, like
    # the continuing eval env. Measured per maze (benchmarks/QUALITY.md, fresh runs): large 49.3 -> 45.4
    # (five runs; runs do not reproduce on CPU, 18.7-65.7); umaze 89.0 -> 94.4 over five seeds with
    # guidance 2 and stage 1's head (alone, unguided, it lost: 86.1 -> 76.5); medium not measured.
    bootstrap = v["local"] and RTG_BOOTSTRAP[v["maze"]]
    c.data.rtg_bootstrap = bootstrap
    # Sparse: 1 per step at the goal, so held goals give discounted returns up to ~19 (bootstrapped:
    # 100, scaled to 2, near the unbootstrapped range).
    c.data.rtg_scale = 50.0 if bootstrap else 10.0 if v["dense"] or v["local"] else 1.0
    c.data.horizon = 128
    c.model.scales = (1, 2, 4, 6, 8, 12, 16, 32)  # T_lat = 128 / 4
    c.eval.target_return = 1.0 if not v["dense"] else 10.0  # used only with learned_target=False
    # Condition on the best return the data shows from the current state: a fixed "goal now" target is
    # out of distribution away from the goal (medium: 25% -> 100% success, benchmarks/QUALITY.md).
    c.eval.learned_target = True
    c.eval.cfg_scale = (GUIDANCE_BOOTSTRAPPED if bootstrap else GUIDANCE)[v["maze"]]
    if bootstrap and not STAGE3_HEAD[v["maze"]]:
        c.head.num_steps = 0  # stage 1's head acts
    c.eval.decrement_return = False  # a discounted RTG is a time-to-goal code, not a budget
    c.eval.multi = v["multi"]
    ae_steps, tf_steps = CPU_STEPS[v["maze"]]
    cpu = {"stage1.num_steps": ae_steps, "stage2.num_steps": tf_steps, "stage2.lr": CPU_STAGE2_LR[v["maze"]],
           "train.eval_every": tf_steps // 2}
    return configs.finalize(c, v["size"], cpu=cpu)
