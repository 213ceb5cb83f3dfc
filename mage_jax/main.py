"""Train and evaluate MAGE: `python -m mage_jax.main --config=experiments/kitchen.py[:variant]`.

Flags: --config (an ml_collections config file with an optional `:variant`; fields can be overridden as
`--config.stage1.num_steps=1000`, and a mistyped field is an error), --workdir, --mode.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mage_jax import host_memory, run_errors
from mage_jax.training import sharding
from mage_jax.training.train import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config file>_<variant>).")
flags.DEFINE_enum("mode", "train", ["train", "train_autoencoder", "train_transformer", "eval"],
                  "train = both stages then evaluation; eval = evaluate the latest checkpoint.")
flags.DEFINE_integer("checkpoint_step", None, "Transformer checkpoint step to evaluate (default latest).")
flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "mage_jax", "xla"),
                    "Persistent XLA compilation cache, so re-runs and resumed runs skip compiling "
                    "('' = off; JAX_COMPILATION_CACHE_DIR takes precedence).")
flags.mark_flags_as_required(["config"])


def _default_workdir(config_arg: str) -> str:
    path, _, variant = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}_{variant.replace(',', '_')}" if variant else name)


def _quiet_library_info(record) -> bool:
    """Keep INFO lines of this package; libraries (orbax logs every save) only from WARNING up."""
    return record.levelno >= std_logging.WARNING or "mage_jax" in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:
        logging.get_absl_handler().addFilter(_quiet_library_info)
    if FLAGS.compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))
    sharding.maybe_initialize_distributed()
    logging.info("JAX %s, process %d/%d, devices: %s", jax.__version__, jax.process_index(),
                 jax.process_count(), jax.devices())
    if hint := host_memory.slow_allocator_hint(jax.default_backend()):
        logging.warning("%s", hint)
    workdir = FLAGS.workdir or _default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    try:
        train_and_evaluate(FLAGS.config, workdir, FLAGS.mode, FLAGS.checkpoint_step)
    except run_errors.Preempted as e:
        logging.warning("%s", e)
        sys.exit(0)
    except run_errors.USER_ERRORS as e:
        # Errors the user can act on get their message, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
