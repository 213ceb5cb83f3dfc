"""Checks of a run's config and flags before anything expensive: each mistake is one clear line.

The launcher calls these before the dataset is generated or loaded and before any model is built, so a
mistyped value costs a second, not a dataset load and a jit trace. Three tiers, cheapest first:

* `check_config(config)`: values and the relations between them (scales against horizon and downsample,
  action_chunk <= action_horizon, ...). Imports nothing heavy, so it runs before JAX is imported.
* `check_run(config, workdir, mode, checkpoint_step)`: the workdir is writable, and the checkpoints that
  `--mode` and `--checkpoint_step` need exist.
* `check_with_library(config, device_count)`: the names whose lists live in library modules (schedules,
  observation families, generators, ...) and batch sizes against the device count.

Fields this module does not know are left alone (new ones may be added at any time), and a known field
that is absent is skipped. Every problem is a `UsageError`; the launcher prints the first one (and the
count of the rest) and exits 2.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Callable

# The stage checkpoints each `--mode` needs before it starts (the acting head: only when it is trained).
_NEEDED_STAGES = {"mage": {"eval": ("autoencoder", "transformer", "head"),
                           "train_transformer": ("autoencoder",),
                           "train_head": ("autoencoder", "transformer")},
                  "bc": {"eval": ("bc",)}}
_HOW_TO_TRAIN = {"autoencoder": "--mode=train or --mode=train_autoencoder",
                 "transformer": "--mode=train or --mode=train_transformer",
                 "head": "--mode=train or --mode=train_head; or act with stage 1's head: "
                         "--config.head.acts=False",
                 "bc": "--mode=train"}
_EVAL_STAGE = {"mage": "transformer", "bc": "bc"}  # the stage --checkpoint_step selects
# Copies of lists in JAX-importing modules (check_config runs before JAX is imported); a test keeps
# them equal to models.transformer.COMPUTE_DTYPES and training.loop.SCAN_MODES.
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_SCAN_MODES = ("auto", "always", "never")
_PLAN_REDUCTIONS = ("best", "mean")


class UsageError(ValueError):
    """A mistake in the command line or config; the launcher prints it as one line and exits 2."""


_ABSENT = object()


def _get(config, path: str):
    node = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return _ABSENT
        node = node[part]
    return node


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _int_at_least(low: int) -> tuple[Callable, str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _one_of(allowed: tuple) -> tuple[Callable, str]:
    return (lambda v: v in allowed), "one of: " + ", ".join(map(repr, allowed))


def _in_range(low: float, high: float, low_open: bool = False, high_open: bool = False):
    brackets = ("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")

    def ok(v) -> bool:
        if not _is_number(v) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return ok, f"in {brackets}"


def _positive():
    return (lambda v: _is_number(v) and math.isfinite(v) and v > 0), "a finite number > 0"


def _non_negative():
    return (lambda v: _is_number(v) and math.isfinite(v) and v >= 0), "a finite number >= 0"


# (field, (test, what it must be)): one line each so the table reads like the config.
_FIELD_RULES = {
    "data.dataset_id": ((lambda v: isinstance(v, str) and bool(v.strip())), "a Minari dataset id"),
    "data.horizon": _int_at_least(1),
    "data.rtg_discount": _in_range(0, 1, low_open=True),
    "data.rtg_scale": _positive(),
    "data.val_fraction": _in_range(0, 1, high_open=True),
    "data.val_windows": _int_at_least(1),
    "data.generator_kwargs.steps": _int_at_least(1),
    "data.generator_kwargs.episodes": _int_at_least(1),
    "model.hidden_channels": _int_at_least(1),
    "model.num_res_blocks": _int_at_least(0),
    "model.downsample": ((lambda v: _is_int(v) and v >= 1 and v & (v - 1) == 0), "a power of 2"),
    "model.code_dim": _int_at_least(1),
    "model.vocab_size": _int_at_least(1),
    "model.phi_ratio": _in_range(0, 1),
    "model.num_phis": _int_at_least(1),
    "model.vq_beta": _non_negative(),
    "model.dead_code_decay": _in_range(0, 1),
    "model.dead_code_threshold": _non_negative(),
    "model.inv_hidden": _int_at_least(1),
    "model.inv_layers": _int_at_least(0),
    "model.action_horizon": _int_at_least(1),
    "model.tf_depth": _int_at_least(1),
    "model.tf_width": _int_at_least(1),
    "model.tf_heads": _int_at_least(1),
    "model.tf_mlp_ratio": _positive(),
    "model.cond_dropout": _in_range(0, 1, high_open=True),
    "model.dtype": ((lambda v: v in _DTYPES), "one of: " + ", ".join(map(repr, _DTYPES))),
    "head.acts": ((lambda v: isinstance(v, bool)), "True or False"),
    "head.true_scales": _int_at_least(0),
    "head.plan_buffer": _int_at_least(0),
    "train.num_seeds": _int_at_least(1),
    "train.seed_shards": _int_at_least(1),
    "train.steps_per_call": _int_at_least(1),
    "train.scan_updates": _one_of(_SCAN_MODES),
    "train.log_every": _int_at_least(1),
    "train.checkpoint_every": _int_at_least(1),
    "train.keep_checkpoints": _int_at_least(1),
    "train.eval_every": _int_at_least(0),
    "train.val_every": _int_at_least(0),
    "eval.num_seeds": _int_at_least(1),
    "eval.seed_offset": _int_at_least(0),
    "eval.max_steps": _int_at_least(0),
    "eval.target_return": ((lambda v: _is_number(v) and math.isfinite(v)),
                           "a finite number (< 0 = the best return in the data)"),
    "sampling.cfg_scale": _non_negative(),
    "sampling.temperature": _positive(),
    "sampling.top_k": _int_at_least(0),
    "sampling.top_p": _in_range(0, 1),
    "eval.num_plans": _int_at_least(1),
    "eval.plan_reduce": _one_of(_PLAN_REDUCTIONS),
    "eval.action_chunk": _int_at_least(1),
}

# Fields of every training-stage section (any top-level section with a batch_size: stage1, stage2, ...).
_STAGE_RULES = {
    "batch_size": _int_at_least(1),
    "num_steps": _int_at_least(0),
    "lr": _positive(),
    "warmup_steps": _int_at_least(0),
    "weight_decay": _non_negative(),
    "b1": _in_range(0, 1, high_open=True),
    "b2": _in_range(0, 1, high_open=True),
    "grad_clip": _positive(),
    "gumbel_tau": _positive(),
}


def stage_sections(config) -> list[str]:
    """Top-level sections that configure a training stage (they have a batch_size)."""
    return [k for k in config.keys() if hasattr(config[k], "keys") and "batch_size" in config[k].keys()]


def _value_problems(config) -> list[str]:
    rules = dict(_FIELD_RULES)
    for section in stage_sections(config):
        rules.update({f"{section}.{field}": rule for field, rule in _STAGE_RULES.items()})
        rules.update({f"{section}.{f}": _non_negative() for f in config[section].keys()
                      if f.startswith("lambda_")})
    problems = []
    for path, (ok, requirement) in rules.items():
        value = _get(config, path)
        if value is not _ABSENT and not ok(value):
            problems.append(f"config.{path}={value!r} must be {requirement}")
    return problems


def _suggested_scales(scales: tuple, latent: int) -> str:
    kept = sorted({int(s) for s in scales if _is_int(s) and 1 <= s < latent})
    return '"(' + ",".join(str(s) for s in (*kept, latent)) + ')"'


def _scales_problem(scales: tuple, horizon: int, down: int) -> list[str]:
    latent = horizon // down
    t_lat = f"T_lat = data.horizon / model.downsample = {horizon}/{down} = {latent}"
    if not (scales and all(_is_int(s) for s in scales) and scales[0] >= 1
            and all(b > a for a, b in zip(scales[:-1], scales[1:], strict=False))):
        return [f"config.model.scales={scales} must be strictly increasing positive token-map lengths "
                f"ending in {t_lat}; e.g. --config.model.scales={_suggested_scales(scales, latent)}"]
    if scales[-1] != latent:
        return [f"config.model.scales={scales} must end in {t_lat}; e.g. --config.data.horizon="
                f"{scales[-1] * down} to fit these scales, or --config.model.scales="
                f"{_suggested_scales(scales, latent)}"]
    return []


def _scale_problems(config) -> list[str]:
    horizon, down = _get(config, "data.horizon"), _get(config, "model.downsample")
    scales = _get(config, "model.scales")
    if not (_is_int(horizon) and _is_int(down) and horizon >= 1 and down >= 1 and down & (down - 1) == 0):
        return []  # reported by the value rules
    scales = tuple(scales) if isinstance(scales, (tuple, list)) else scales
    if horizon % down:
        fits = isinstance(scales, tuple) and scales and _is_int(scales[-1]) and scales[-1] >= 1
        fix = scales[-1] * down if fits else max(down, horizon // down * down)
        return [f"config.data.horizon={horizon} must be a multiple of model.downsample={down} (the latent "
                f"length is horizon / downsample); e.g. --config.data.horizon={fix}"]
    if scales is _ABSENT:
        return []
    return _scales_problem(scales if isinstance(scales, tuple) else (scales,), horizon, down)


def _relation_problems(config) -> list[str]:
    g = lambda path: _get(config, path)
    problems = []
    horizon, action_horizon, chunk = g("data.horizon"), g("model.action_horizon"), g("eval.action_chunk")
    if _is_int(horizon) and _is_int(action_horizon) and action_horizon > horizon >= 1:
        problems.append(f"config.model.action_horizon={action_horizon} must be <= data.horizon={horizon} "
                        "(inverse dynamics reads its actions off one plan)")
    if _is_int(chunk) and _is_int(action_horizon) and chunk > action_horizon >= 1:
        problems.append(f"config.eval.action_chunk={chunk} must be <= model.action_horizon={action_horizon}"
                        f" (actions predicted per plan); raise --config.model.action_horizon={chunk} "
                        f"or lower eval.action_chunk")
    width, heads = g("model.tf_width"), g("model.tf_heads")
    if _is_int(width) and _is_int(heads) and width >= 1 and heads >= 1 and width % heads:
        fit = max(h for h in range(1, heads + 1) if width % h == 0)
        problems.append(f"config.model.tf_width={width} must be divisible by model.tf_heads={heads}; "
                        f"e.g. --config.model.tf_heads={fit}")
    true_scales, scales = g("head.true_scales"), g("model.scales")
    if _is_int(true_scales) and isinstance(scales, (tuple, list)) and true_scales > len(scales):
        problems.append(f"config.head.true_scales={true_scales} must be <= the number of scales "
                        f"({len(scales)}, model.scales); 0 trains the head on fully sampled plans")
    if g("head.acts") is True and g("head.num_steps") == 0:
        problems.append("config.head.num_steps=0 leaves stage 3's acting head untrained; to act with "
                        "stage 1's inverse dynamics set --config.head.acts=False")
    top_k, vocab = g("sampling.top_k"), g("model.vocab_size")
    if _is_int(top_k) and _is_int(vocab) and top_k > vocab >= 1:
        problems.append(f"config.sampling.top_k={top_k} must be <= model.vocab_size={vocab} (0 = off)")
    discount = g("data.rtg_discount")
    if g("data.rtg_bootstrap") is True and _is_number(discount) and discount >= 1:
        problems.append(f"config.data.rtg_bootstrap=True needs data.rtg_discount < 1 (got {discount}): "
                        "an undiscounted held reward has no finite return; lower it or drop the bootstrap")
    dataset_id, multi = g("data.dataset_id"), g("eval.multi")
    if multi is True and isinstance(dataset_id, str) and "pointmaze" not in dataset_id.lower():
        problems.append(f"config.eval.multi=True (random start and goal) is only defined for PointMaze, "
                        f"not {dataset_id!r}; drop it")
    return problems


def _raise_if_any(problems: list[str]) -> None:
    if not problems:
        return
    rest = len(problems) - 1
    more = f"\n  ({rest} more: " + "; ".join(problems[1:3]) + (" ..." if rest > 2 else "") + ")"
    raise UsageError(problems[0] + (more if rest else ""))


def check_config(config) -> None:
    """Raise UsageError on a bad value or combination of values; imports nothing heavy."""
    _raise_if_any(_value_problems(config) + _scale_problems(config) + _relation_problems(config))


def checkpoint_steps(workdir: str, stage: str) -> list[int]:
    """Steps of the finished checkpoints of `stage` (orbax names them by step; temporaries differ)."""
    path = os.path.join(workdir, "checkpoints", stage)
    if not os.path.isdir(path):
        return []
    return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _warm_start(config, stage: str) -> str:
    """The run `stage` is warm-started from (`init.<stage>`), or ""."""
    source = _get(config, f"init.{stage}")
    return source if isinstance(source, str) else ""


def _warm_start_problems(config) -> list[str]:
    """`init.<stage>` names a run with a checkpoint of that stage; a transformer comes with its own
    autoencoder (it was trained on that autoencoder's tokens)."""
    problems = []
    for stage in ("autoencoder", "transformer"):
        source = _warm_start(config, stage)
        if source and not checkpoint_steps(source, stage):
            problems.append(f"config.init.{stage}={source!r} holds no {stage} checkpoint "
                            f"({os.path.join(source, 'checkpoints', stage)}); pass the workdir of a "
                            "run that trained it")
    transformer, autoencoder = _warm_start(config, "transformer"), _warm_start(config, "autoencoder")
    if transformer and os.path.abspath(transformer) != os.path.abspath(autoencoder or "."):
        problems.append(f"config.init.transformer={transformer!r} needs config.init.autoencoder set to "
                        "the same run: a transformer is trained on its own autoencoder's tokens")
    return problems


def _checkpoint_problems(config, workdir: str, mode: str, checkpoint_step: int | None) -> list[str]:
    algorithm = _get(config, "algorithm")
    algorithm = algorithm if algorithm in _NEEDED_STAGES else "mage"
    if algorithm == "bc" and mode not in ("train", "eval"):
        return [f"--mode={mode} trains one MAGE stage; the baseline config.algorithm='bc' has one stage: "
                "use --mode=train or --mode=eval"]
    if mode == "train_head" and _get(config, "head.acts") is False:
        return ["--mode=train_head trains stage 3's acting head, but config.head.acts=False (stage 1's head "
                "acts, so there is no stage 3): pass --config.head.acts=True to train and act with it"]
    problems = _warm_start_problems(config)
    if problems:
        return problems
    for stage in _NEEDED_STAGES[algorithm].get(mode, ()):
        if stage == "head" and _get(config, "head.acts") is False:
            continue  # the policy acts with stage 1's head
        if not checkpoint_steps(workdir, stage) and not _warm_start(config, stage):
            folder = os.path.join(workdir, "checkpoints", stage)
            return [f"--mode={mode} needs a trained {stage}, but {folder} holds no checkpoint; train first "
                    f"({_HOW_TO_TRAIN[stage]}) or pass the --workdir of a trained run"]
    if checkpoint_step is None:
        return []
    if mode != "eval":
        return [f"--checkpoint_step={checkpoint_step} only applies to --mode=eval (training always "
                "resumes from the latest checkpoint)"]
    stage = _EVAL_STAGE[algorithm]
    steps = checkpoint_steps(workdir, stage)
    if checkpoint_step not in steps:
        return [f"--checkpoint_step={checkpoint_step}: no {stage} checkpoint at that step in "
                f"{os.path.join(workdir, 'checkpoints', stage)}; available: "
                + ", ".join(str(s) for s in steps)]
    return []


def _workdir_problem(workdir: str) -> list[str]:
    """Creating the workdir and a file in it now beats failing after the dataset is loaded."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        where = f" ({e.filename})" if e.filename and os.path.abspath(str(e.filename)) != os.path.abspath(
            workdir) else ""
        return [f"--workdir={workdir} cannot be written: {reason}{where}; pass a --workdir you can write"]
    return []


def check_run(config, workdir: str, mode: str, checkpoint_step: int | None = None) -> None:
    """Raise UsageError unless `mode` has the checkpoints it needs and `workdir` is writable."""
    _raise_if_any(_checkpoint_problems(config, workdir, mode, checkpoint_step) or _workdir_problem(workdir))


def _choice(config, path: str, allowed, problems: list[str]) -> None:
    value = _get(config, path)
    if value is not _ABSENT and value not in allowed:
        problems.append(f"config.{path}={value!r} must be one of: " + ", ".join(repr(a) for a in allowed))


def _library_choice_problems(config) -> list[str]:
    # The lists live in modules that import JAX, minari or gymnasium: only loaded for this tier.
    from mage_jax.data.minari_source import DatasetUnavailableError, validate_dataset_id
    from mage_jax.data.observations import OBS_FAMILIES, infer_obs_family
    from mage_jax.datasets.registry import GENERATORS
    from mage_jax.evaluation.rollout import VECTOR_MODES
    from mage_jax.training.optim import SCHEDULES
    from mage_jax.training.train import ALGORITHMS

    problems: list[str] = []
    _choice(config, "algorithm", ALGORITHMS, problems)
    _choice(config, "data.obs_family", OBS_FAMILIES, problems)
    _choice(config, "data.generator", ("", *GENERATORS), problems)
    _choice(config, "eval.vector_env", VECTOR_MODES, problems)
    for section in stage_sections(config):
        _choice(config, f"{section}.lr_schedule", SCHEDULES, problems)
    dataset_id, family = _get(config, "data.dataset_id"), _get(config, "data.obs_family")
    if isinstance(dataset_id, str) and dataset_id:
        try:
            validate_dataset_id(dataset_id)
        except DatasetUnavailableError as e:
            problems.append(f"config.data.dataset_id: {e}")
        expected = infer_obs_family(dataset_id)
        if family in OBS_FAMILIES and expected != "box" and family != expected:
            problems.append(f"config.data.obs_family={family!r} does not fit {dataset_id!r}, whose "
                            f"observations flatten as {expected!r}; set --config.data.obs_family={expected}")
    return problems


def _batch_problems(config, device_count: int) -> list[str]:
    shards, num_seeds = _get(config, "train.seed_shards"), _get(config, "train.num_seeds")
    shards = shards if _is_int(shards) and shards >= 1 else 1
    num_seeds = num_seeds if _is_int(num_seeds) and num_seeds >= 1 else 1
    problems = []
    if device_count % shards or num_seeds % shards:
        problems.append(f"config.train.seed_shards={shards} must divide both the {device_count} devices "
                        f"and config.train.num_seeds={num_seeds}; e.g. --config.train.seed_shards=1")
        shards = 1
    per_seed = device_count // shards  # devices that split each seed's batch
    for section in stage_sections(config):
        batch = config[section].batch_size
        if _is_int(batch) and batch >= 1 and batch % per_seed:
            fix = per_seed * max(1, round(batch / per_seed))
            problems.append(f"config.{section}.batch_size={batch} is not divisible by the {per_seed} "
                            f"devices of the mesh's data axis; e.g. --config.{section}.batch_size={fix}")
    return problems


def check_with_library(config, device_count: int) -> None:
    """Raise UsageError on names the library does not know, or batches the devices cannot split."""
    _raise_if_any(_library_choice_problems(config) + _batch_problems(config, device_count))
