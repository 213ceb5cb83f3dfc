"""The base ml_collections config shared by every experiment file, and the size modifiers.

`experiments/*.py` start from `base_config()`, set their dataset fields, then apply the size
modifier named in the variant string (`quicktest`, `cpu`, or none for the accelerator default).
Sizes are our own defaults (the paper's appendix values are not public); see docs/design.md#sizes.
"""

from __future__ import annotations

import ml_collections

SIZE_MODIFIERS = ("quicktest", "cpu")


def base_config() -> ml_collections.ConfigDict:
    """Accelerator-default config; experiment files override the data fields."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # training seed (evaluation seeds are fixed separately, see eval.seed_offset)
    c.algorithm = "mage"  # 'mage' | 'bc' (behaviour-cloning baseline on the same data and scoring)

    c.data = ml_collections.ConfigDict()
    c.data.dataset_id = ""  # Minari dataset id, e.g. 'D4RL/kitchen/mixed-v2'
    c.data.obs_family = "box"  # observation flattening: 'kitchen' | 'maze' | 'antmaze' | 'box'
    c.data.download = True  # download from the Minari remote when the dataset is not local
    c.data.generator = ""  # local generator used when the dataset is missing ('' = none)
    c.data.generator_kwargs = ml_collections.ConfigDict()  # keyword arguments for the generator
    c.data.rtg_discount = 1.0  # discount of the return-to-go (1.0 = undiscounted)
    c.data.rtg_scale = 1.0  # returns-to-go are divided by this
    # Truncated episodes keep their last reward forever in the return-to-go (a goal held when the
    # data cut the episode; needs rtg_discount < 1). Off: a truncated episode's return just stops.
    c.data.rtg_bootstrap = False
    c.data.horizon = 64  # trajectory segment length H modelled by the autoencoder
    c.data.val_fraction = 0.05  # share of episodes held out for validation metrics (0 = none)
    c.data.val_seed = 0  # seed of the held-out episode split and of the validation windows
    c.data.val_windows = 512  # held-out windows the validation metrics average over

    c.model = ml_collections.ConfigDict()
    c.model.hidden_channels = 128  # width of the 1-D conv encoder/decoder
    c.model.num_res_blocks = 2  # residual blocks per resolution in encoder and decoder
    c.model.downsample = 4  # temporal downsampling of the encoder (power of 2); T_lat = H / this
    c.model.code_dim = 32  # codebook embedding size C
    c.model.vocab_size = 512  # shared codebook size V
    c.model.scales = (1, 2, 3, 4, 6, 8, 12, 16)  # token-map lengths l_1..l_K; last = T_lat
    c.model.phi_ratio = 0.5  # phi refinement: share of the Conv1d output mixed with its input
    c.model.num_phis = 4  # phi convolutions shared by nearest scale fraction
    c.model.vq_beta = 0.25  # commitment weight of the VQ loss
    c.model.reseed_dead_codes = True  # re-seed unused codes from recent encoder outputs
    c.model.dead_code_decay = 0.9  # EMA decay of per-code usage (1.0 = a uniform share of tokens)
    c.model.dead_code_threshold = 0.03  # EMA usage below this marks a code dead (~33 idle steps)
    c.model.inv_hidden = 256  # hidden width of the latent inverse-dynamics MLP
    c.model.inv_layers = 2  # hidden layers of the latent inverse-dynamics MLP
    c.model.action_horizon = 1  # actions predicted per plan by inverse dynamics (>= eval.action_chunk)
    c.model.tf_depth = 6  # transformer blocks
    c.model.tf_width = 256  # transformer embedding width
    c.model.tf_heads = 4  # attention heads
    c.model.tf_mlp_ratio = 4.0  # MLP hidden width / embedding width
    c.model.tf_qk_norm = True  # L2-normalise queries and keys (with a learned scale)
    c.model.cond_dropout = 0.1  # share of rows whose return R_0 is dropped (classifier-free guidance)
    c.model.dtype = "auto"  # transformer matmuls: 'auto' (bf16 on GPU/TPU, else f32) | 'float32' | 'bfloat16'

    c.stage1 = _stage_config(batch_size=256, num_steps=100_000, lr=3e-4)  # autoencoder stage
    c.stage1.lambda_recon = 1.0  # weight of the reconstruction MSE
    c.stage1.lambda_vq = 1.0  # weight of the VQ (codebook + commitment) loss
    c.stage1.lambda_cond = 1.0  # weight of the adapter start-consistency loss L_cond
    c.stage1.lambda_inv = 1.0  # weight of the latent inverse-dynamics loss L_inv

    c.stage2 = _stage_config(batch_size=256, num_steps=100_000, lr=3e-4)  # transformer stage
    # Add L_cond + L_inv through a Gumbel-softmax relaxation (the paper's end-to-end path; off:
    # docs/decisions.md#stage2-gumbel-e2e).
    c.stage2.gumbel_e2e = False
    c.stage2.gumbel_tau = 1.0  # Gumbel-softmax temperature
    c.stage2.lambda_cond = 0.1  # weight of L_cond on the end-to-end path
    c.stage2.lambda_inv = 0.1  # weight of L_inv on the end-to-end path
    c.stage2.lambda_return = 1.0  # weight of the learned-target head's expectile loss
    c.stage2.return_expectile = 0.9  # expectile of R_0 given s_0 the target head learns

    # Stage 3: the acting head (inverse dynamics) on plans the transformer generates (0 steps = act
    # with stage 1's head, which only ever saw encoded true futures).
    c.head = _stage_config(batch_size=256, num_steps=5_000, lr=3e-4)
    # Which head acts: stage 3's (True; it trains head.num_steps updates), or stage 1's inverse
    # dynamics (False: stage 3 is skipped).
    c.head.acts = True
    # Coarse scales of each training plan taken from the window's true future, the finer ones sampled
    # on top (0 = fully sampled plans, which the head learns to ignore; docs/decisions.md#head-true-scales).
    c.head.true_scales = 2
    # Windows whose plans are sampled once before stage 3; the head then trains on draws from them, so
    # its updates cost nothing to sample (0 = a freshly sampled plan for every window of every update).
    c.head.plan_buffer = 0

    # The behaviour-cloning baseline (`algorithm='bc'`): its own size and budget, chosen by its held-out
    # action error and score having levelled off (docs/decisions.md#bc-budget); the same at every size
    # but `quicktest`, since it costs minutes even on 2 cores.
    c.bc = _stage_config(batch_size=256, num_steps=50_000, lr=5e-4)
    c.bc.warmup_steps = 500  # linear warm-up steps
    c.bc.hidden = 256  # hidden width of the MLP
    c.bc.layers = 3  # hidden layers of the MLP

    # Warm starts: a stage this run has no checkpoint of is copied from another run's finished one
    # (its workdir; same data and model), and trains on only if its budget is larger.
    c.init = ml_collections.ConfigDict()
    c.init.autoencoder = ""  # e.g. runs/medium: reuse its stage 1 (then train stages 2 and 3 here)
    c.init.transformer = ""  # the same run as init.autoencoder: reuse stages 1 and 2 (train stage 3)
    c.train = ml_collections.ConfigDict()
    # Training seeds config.seed + 0..num_seeds-1, trained together as one vmapped program (every stage,
    # BC too) and evaluated together: eval_results.json then reports each seed and the IQM across them.
    c.train.num_seeds = 1
    c.train.seed_shards = 1  # devices the seeds are split over (the rest split each seed's batch)
    c.train.steps_per_call = 10  # updates per call, to amortise dispatch and host round-trips
    c.train.scan_updates = "auto"  # a call's updates as one lax.scan: 'auto' (not on CPU), 'always', 'never'
    c.train.log_every = 100  # steps between metric writes
    c.train.checkpoint_every = 5_000  # steps between checkpoints
    c.train.keep_checkpoints = 3  # checkpoints kept per stage
    c.train.eval_every = 0  # steps between periodic evaluations in stage 2 (0 = only at the end)
    c.train.val_every = 2_000  # steps between held-out validations in every stage (0 = at the end)

    c.eval = ml_collections.ConfigDict()
    c.eval.num_seeds = 50  # environment seeds evaluated together
    c.eval.seed_offset = 1_000_000  # evaluation seeds are seed_offset + 0..num_seeds-1
    c.eval.max_steps = 0  # episode step limit (0 = the evaluation env's own limit)
    c.eval.target_return = -1.0  # initial return-to-go, unscaled (-1 = best episode return in data)
    c.eval.decrement_return = True  # subtract collected reward from the return-to-go each step
    c.eval.num_plans = 1  # plans sampled per step (M); with M > 1, eval.plan_reduce says how to act on them
    # 'best': act on the plan ending in the best learned value; 'mean': average the head's actions
    # over the M plans (the expected action under the plan distribution, not one sample of it).
    # Both measured: docs/decisions.md#num-plans.
    c.eval.plan_reduce = "best"
    c.eval.action_chunk = 1  # actions executed from each plan before replanning
    c.eval.vector_env = "auto"  # 'sync' | 'async' | 'auto' (async for heavy envs such as kitchen)
    c.eval.multi = False  # pointmaze: random start and goal per episode (Multi2D)

    # How plans are sampled, wherever they are: acting, stage 3's training plans and the held-out
    # metrics on generated plans all read this section. Acting conditions on eval.target_return, or
    # with learned_target on the learned best return of the current state; stage 3 and the held-out
    # metrics condition on each window's own return, since they compare with that window's actions.
    c.sampling = ml_collections.ConfigDict()
    c.sampling.learned_target = False  # act on the learned best return of the state (see above)
    c.sampling.cfg_scale = 1.0  # classifier-free guidance strength (0 = conditional model)
    c.sampling.cfg_ramp = False  # ramp the guidance linearly over scales (VAR)
    c.sampling.temperature = 1.0  # sampling temperature
    c.sampling.top_k = 0  # keep the k most likely codes (0 = off)
    c.sampling.top_p = 0.0  # nucleus sampling mass (0 = off)
    return c


def _stage_config(batch_size: int, num_steps: int, lr: float) -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.batch_size = batch_size  # global batch size (sharded over all devices)
    s.num_steps = num_steps  # optimiser updates
    s.lr = lr  # peak learning rate
    s.warmup_steps = 1_000  # linear warm-up steps
    s.lr_schedule = "cosine"  # decay after warm-up: 'cosine' | 'linear' | 'constant'
    s.weight_decay = 0.05  # AdamW weight decay
    s.b1 = 0.9  # AdamW beta1
    s.b2 = 0.95  # AdamW beta2
    s.grad_clip = 1.0  # global-norm gradient clipping
    return s


def apply_size(config: ml_collections.ConfigDict, size: str) -> ml_collections.ConfigDict:
    """Shrink the model and budget in place: 'quicktest' (tests, ~1 min) or 'cpu' (2 cores)."""
    c = config
    if size == "quicktest":
        c.data.horizon = 32
        c.model.update(
            scales=(1, 2, 3, 4, 6, 8, 12, 16), hidden_channels=32, num_res_blocks=1, downsample=2,
            code_dim=16, vocab_size=128,
            inv_hidden=64, tf_depth=2, tf_width=64, tf_heads=2,
        )
        for stage in (c.stage1, c.stage2, c.head, c.bc):
            stage.update(batch_size=32, num_steps=200, warmup_steps=20, lr=1e-3)
        c.bc.update(hidden=64, layers=2)
        c.head.num_steps = 50
        c.data.val_windows = 64
        c.train.update(steps_per_call=10, log_every=50, checkpoint_every=100, eval_every=0, val_every=0)
        c.eval.num_seeds = 4
    elif size == "cpu":
        c.data.horizon = 64
        c.model.update(
            scales=(1, 2, 3, 4, 6, 8, 12, 16), hidden_channels=64, num_res_blocks=1, downsample=4,
            code_dim=32, vocab_size=256,
            inv_hidden=128, tf_depth=4, tf_width=128, tf_heads=4,
        )
        for stage in (c.stage1, c.stage2):
            stage.update(batch_size=64, num_steps=20_000, warmup_steps=500, lr=5e-4)
        c.head.update(batch_size=64, num_steps=1_000, warmup_steps=100, lr=5e-4)
        c.train.update(steps_per_call=20, log_every=200, checkpoint_every=2_000, val_every=1_000)
        c.eval.num_seeds = 20
    else:
        raise ValueError(f"unknown size modifier {size!r}; expected one of {SIZE_MODIFIERS}")
    return c


def parse_variant(arg: str | None, choices: dict[str, tuple[str, ...]], defaults: dict[str, str],
                  flags: tuple[str, ...] = ()) -> dict:
    """Parse a comma-separated variant string such as 'medium,dense,cpu'.

    `choices` maps a group name to its allowed values (at most one value per group; `defaults` fills
    the rest), `flags` are on/off words. Size modifiers go to the 'size' key ('' = accelerator
    default). Unknown words are an error that lists what is allowed.
    """
    out = dict(defaults, size="", **{f: False for f in flags})
    seen = set()
    for word in [w.strip() for w in (arg or "").split(",") if w.strip()]:
        group = next((g for g, values in choices.items() if word in values), None)
        if word in SIZE_MODIFIERS:
            group = "size"
        elif word in flags:
            out[word] = True
            continue
        if group is None:
            allowed = sorted({v for vs in choices.values() for v in vs} | set(flags)
                             | set(SIZE_MODIFIERS))
            raise ValueError(f"unknown config variant {word!r} in {arg!r}; allowed: "
                             + ", ".join(allowed))
        if group in seen:
            raise ValueError(f"config variant {arg!r} names two values for {group!r}")
        seen.add(group)
        out[group] = word
    return out


def finalize(config: ml_collections.ConfigDict, size: str,
             **per_size: dict[str, object]) -> ml_collections.ConfigDict:
    """Apply the size modifier (if any), then `per_size[size]` (dotted field -> value: a family's own
    budget at that size, e.g. cpu={"stage2.num_steps": 4000}), and lock the config so mistyped
    overrides fail."""
    if size:
        apply_size(config, size)
    for field, value in per_size.get(size, {}).items():
        *sections, name = field.split(".")
        target = config
        for section in sections:
            target = target[section]
        if name not in target:
            raise KeyError(f"per-size override of unknown config field {field!r}")
        target[name] = value
    config.lock()
    return config
