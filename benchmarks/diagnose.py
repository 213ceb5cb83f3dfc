"""Diagnose a saved MAGE run: where the acting path loses accuracy, and eval-only sweeps.

    python benchmarks/diagnose.py --config=experiments/pointmaze.py:local,medium,cpu \
        --workdir=runs/pointmaze_local_medium_cpu [--bc_workdir=runs/<bc run>] \
        [--sweep=sampling.cfg_scale=0,1,3 --sweep=sampling.temperature=0.5,1 \
         --sweep=eval.num_plans=1,4 --sweep=acting_head=stage1,stage3]

Pass the run's own --config (and any --config.* overrides it was trained with): checkpoints are
checked against it. Nothing is retrained and the run's files are not touched; outputs go to
`<workdir>/diagnose/`. First a table of held-out validation metrics at the final checkpoints (the
action error of every way of acting next to predicting the mean action and BC), then one evaluation
per sweep value (score, success, the held-out action error of the head on one plan sampled with
those options, and that of the policy as it acts, which also counts eval.num_plans and its reduction).
`acting_head=stage1|stage3` switches between stage 1's inverse dynamics and stage 3's acting head.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mage_jax.baselines import bc  # noqa: E402
from mage_jax.models.sampling import sampling_options  # noqa: E402
from mage_jax.training import train, validation  # noqa: E402
from mage_jax.training.metrics_writer import MetricsWriter  # noqa: E402
from mage_jax.training.seeds import select  # noqa: E402
from mage_jax.training.stage1 import masked_action_error  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The run's config file[:variant].", lock_config=True)
flags.DEFINE_string("workdir", None, "The MAGE run to diagnose.")
flags.DEFINE_string("bc_workdir", None, "A BC run on the same data, for its held-out action error.")
flags.DEFINE_multi_string("sweep", [], "field=v1,v2,...: evaluate once per value (eval.* and sampling.* "
                          "fields, or acting_head=stage1,stage3).")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_sweep(spec: str, config) -> tuple[str, list]:
    field, _, values = spec.partition("=")
    if not values:
        raise app.UsageError(f"--sweep={spec!r}: expected field=v1,v2,...")
    words = [v.strip() for v in values.split(",") if v.strip()]
    if field == "acting_head":
        return field, words
    section, _, name = field.partition(".")
    if section not in ("eval", "sampling") or name not in config[section]:
        raise app.UsageError(f"--sweep field {field!r}: only eval.* and sampling.* fields or acting_head "
                             "can be swept")
    kind = type(config[section][name])
    return field, [(w.lower() in ("1", "true")) if kind is bool else kind(w) for w in words]


def _validation_table(ctx, config, params: dict, bc_params) -> dict:
    """Held-out metrics of every stage: floats, or one value per training seed of a stacked run
    (the validation programs vmap over the seeds, as in training)."""
    batch, ae_model, tf_model, stacked = ctx.val_batch, ctx.ae_model, ctx.tf_model, ctx.stacked
    ae_params, tf_params, head = params["autoencoder"], params["transformer"], params.get("head")
    rows = {"held-out windows": batch["segments"].shape[0],
            "action variance (error of the mean action)": validation.action_variance(batch)}
    rows.update({f"autoencoder {k}": v for k, v in
                 validation.autoencoder_validation(ae_model, batch, stacked)(ae_params).items()})
    tf_metrics = validation.transformer_validation(config, ae_model, tf_model, ae_params, batch,
                                                   stacked)(tf_params)
    rows.update({f"transformer {k}": v for k, v in tf_metrics.items()})
    if head is not None:
        rows["stage-3 head action_mse_sampled_plan"] = validation.head_validation(
            config, ae_model, tf_model, ae_params, tf_params, batch, stacked)(head)[
            "action_mse_sampled_plan"]
    if bc_params is not None:
        rows["BC action_mse"] = validation.bc_validation(bc.make_bc_model(config, ctx.action_dim),
                                                         batch, stacked)(bc_params)["action_mse"]
    return rows


def _sweep_one(ctx, config, field: str, value, params: dict, step: int) -> dict:
    from mage_jax.evaluation.run import evaluate_run

    cfg = copy.deepcopy(config)
    params = dict(params)
    if field == "acting_head":
        if value == "stage1":
            params.pop("head", None)
        elif "head" not in params:
            return {"error": "no stage-3 head (config.head.acts = False)"}
    else:
        section, name = field.split(".", 1)
        cfg[section][name] = value
    out_dir = os.path.join(ctx.workdir, "diagnose", f"{field}={value}")
    sweep_ctx = dataclasses.replace(ctx, config=cfg, workdir=out_dir,
                                    writer=MetricsWriter(out_dir))
    act, _ = train.acting_functions(sweep_ctx)
    results = evaluate_run(sweep_ctx, act, params, step, final=False, stage="diagnose")
    sweep_ctx.writer.close()

    def errors(i):
        one = select(params, i, ctx.stacked)
        acting = jax.device_get(validation.acting_path_metrics(
            ctx.ae_model, ctx.tf_model, one["autoencoder"], one["transformer"], ctx.val_batch,
            jax.random.PRNGKey(int(cfg.data.val_seed)), sampling_options(cfg.sampling), one.get("head")))
        mse = acting.get("head_action_mse_sampled_plan", acting["action_mse_sampled_plan"])
        return {"val_action_mse_sampled_plan": float(mse),
                "val_action_mse_policy": _policy_action_error(ctx, cfg, act, one)}

    aggregate = results["aggregate"]
    row = {"score": results["headline"], "success_rate": aggregate.get("success_rate")}
    if ctx.stacked:
        metric = results["headline"]["metric"]
        row["score_per_training_seed"] = [p["aggregate"][metric]["mean"]
                                          for p in results["per_training_seed"]]
    per_seed = [errors(i) for i in range(len(ctx.seeds or (0,)))]
    return {**row, **_seed_rows({name: [p[name] for p in per_seed] if ctx.stacked else per_seed[0][name]
                                 for name in per_seed[0]})}


def _seed_rows(rows: dict) -> dict:
    """{name: a value, or one per training seed} -> {name: the value or the mean over the seeds},
    plus each seed's values under 'per_training_seed <name>'."""
    out = {}
    for name, value in rows.items():
        value = np.asarray(value, dtype=float)
        out[name] = float(value.mean())
        if value.ndim:
            out[f"per_training_seed {name}"] = value.tolist()
    return out


def _policy_action_error(ctx, config, act, params: dict) -> float:
    """Held-out action MSE of `act` as the evaluation calls it (its target return, guidance, plans
    and head): its action at each held-out window's first state against the window's action(s)."""
    first = ctx.val_batch["segments"][:, 0]  # (N, 1 + S): scaled RTG, normalised state
    observations = first[:, 1:] * ctx.stats.state_std + ctx.stats.state_mean
    actions = act(params, observations, first[:, 0] * config.data.rtg_scale,
                  jax.random.PRNGKey(int(config.data.val_seed)))
    actions = actions if actions.ndim == 3 else actions[:, None]
    return float(masked_action_error(actions, ctx.val_batch["actions"], ctx.val_batch["mask"]))


def main(argv):
    del argv
    config, workdir = FLAGS.config, FLAGS.workdir
    if config.algorithm != "mage":
        raise app.UsageError("diagnose.py reads a MAGE run; pass BC runs as --bc_workdir")
    out_dir = os.path.join(workdir, "diagnose")
    ctx, policy, _ = train.load_policy(config, workdir, out_dir=out_dir)
    if ctx.val_batch is None:
        raise app.UsageError("this dataset holds out no episodes (data.val_fraction = 0)")
    bc_params = None
    if FLAGS.bc_workdir:
        bc_params = train.bc_state(dataclasses.replace(ctx, workdir=FLAGS.bc_workdir), {}, train=False).params
    report = {"validation": _seed_rows(_validation_table(ctx, config, policy.params, bc_params)),
              "sweeps": {}}
    print("\nheld-out validation (final checkpoints, eval sampling options"
          + (f"; mean over training seeds {list(ctx.seeds)}, then each seed)" if ctx.stacked else ")"))
    for name, value in report["validation"].items():
        if not name.startswith("per_training_seed"):
            per_seed = report["validation"].get(f"per_training_seed {name}", ())
            print(f"  {name:<52} {value:.4g}" + "".join(f"  {v:.4g}" for v in per_seed))
    for spec in FLAGS.sweep:
        field, values = _parse_sweep(spec, config)
        for value in values:
            row = _sweep_one(ctx, config, field, value, policy.params, policy.step)
            report["sweeps"][f"{field}={value}"] = row
    if report["sweeps"]:
        print("\neval-only sweeps (score mean ± s.e. over seeds | success | held-out action MSE of "
              "the head on one sampled plan | of the policy as it acts)")
        for name, row in report["sweeps"].items():
            if "error" in row:
                print(f"  {name:<32} {row['error']}")
                continue
            s, ok = row["score"], row["success_rate"]
            success = "" if ok is None else f"{ok['mean']:.0f}%"  # success_rate is x100
            print(f"  {name:<32} {s['metric']} {s['mean']:7.2f} ± {s['stderr']:5.2f} | {success:>4} | "
                  f"{row['val_action_mse_sampled_plan']:.4f} | {row['val_action_mse_policy']:.4f}"
                  + "".join(f" | seed {seed}: {v:.2f}" for seed, v in
                            zip(ctx.seeds or (), row.get("score_per_training_seed", ()), strict=True)))
    path = os.path.join(out_dir, "diagnose.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=float)
    print(f"\nreport: {path}")


if __name__ == "__main__":
    app.run(main)
