"""Train and evaluate MAGE: `python -m mage_jax.main --config=experiments/kitchen.py[:variant]`.

Flags: --config (an ml_collections config file with an optional `:variant`; fields can be overridden as
`--config.stage1.num_steps=1000`, and a mistyped field is an error), --workdir, --mode.

A usage error (a bad flag, config file, variant or config value, a missing checkpoint for --mode=eval)
is reported as one line before any work, with exit code 2; a problem found while running (dataset,
checkpoint, diverged loss) as `error: ...` with exit code 1. `--verbosity=1` or MAGE_JAX_TRACEBACK=1
adds the traceback, for bug reports.
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from mage_jax import config_checks, flag_errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config file>_<variant>).")
flags.DEFINE_enum("mode", "train",
                  ["train", "train_autoencoder", "train_transformer", "train_head", "eval"],
                  "train = all stages then evaluation; train_<stage> = that stage (resuming) only; "
                  "eval = evaluate the latest checkpoint.")
flags.DEFINE_integer("checkpoint_step", None, "Transformer checkpoint step to evaluate (default latest).")
flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "mage_jax", "xla"),
                    "Persistent XLA compilation cache, so re-runs and resumed runs skip compiling "
                    "('' = off; JAX_COMPILATION_CACHE_DIR takes precedence).")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs wired by hand: host:port of process 0's coordinator, the same "
                    "on every process (TPU pods and SLURM need none of these three flags).")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: the number of processes.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0..num_processes-1.",
                     lower_bound=0)
flags.mark_flags_as_required(["config"])

USAGE_ERROR_EXIT, RUN_ERROR_EXIT = 2, 1
TRACEBACK_ENV = "MAGE_JAX_TRACEBACK"


def _default_workdir(config_arg: str) -> str:
    path, _, variant = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}_{variant.replace(',', '_')}" if variant else name)


def _quiet_library_info(record) -> bool:
    """Keep INFO lines of this package; libraries (orbax logs every save) only from WARNING up."""
    return record.levelno >= std_logging.WARNING or "mage_jax" in record.pathname


def _traceback_wanted() -> bool:
    # Read from sys.argv: the flags may not have parsed when the error came.
    if os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    args = " ".join(sys.argv[1:])
    return any(int(v) >= 1 for v in re.findall(r"(?:^|\s)--?(?:verbosity|v)[=\s](-?\d+)", args))


def _fail(message: str, code: int, error: BaseException | None = None):
    if error is not None and _traceback_wanted():
        traceback.print_exception(error)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _config_argument(argv: list[str]) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    return values[-1] if values else None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad flag, config file or variant is one line and exit 2."""
    try:
        rest = FLAGS(argv)
        getattr(FLAGS.config, "keys", None)  # a config file that failed to load raises its OSError here
    except Exception as e:  # noqa: BLE001 - describe() returns None for everything but usage errors
        line = flag_errors.describe(e, argv, _config_argument(argv))
        if line is None:
            raise
        _fail(line, USAGE_ERROR_EXIT, e)
    if len(rest) > 1:
        _fail(f"unexpected arguments: {' '.join(rest[1:])} (flags are written --name=value)",
              USAGE_ERROR_EXIT)
    return rest


def main(argv):
    del argv  # checked by _parse_flags
    if not FLAGS["verbosity"].present:
        logging.get_absl_handler().addFilter(_quiet_library_info)
    workdir = FLAGS.workdir or _default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    if problem := _distributed_flags_problem():
        _fail(problem, USAGE_ERROR_EXIT)
    try:  # the cheap checks first: JAX and the library are not even imported yet
        config_checks.check_config(FLAGS.config)
        config_checks.check_run(FLAGS.config, workdir, FLAGS.mode, FLAGS.checkpoint_step)
    except config_checks.UsageError as e:
        _fail(str(e), USAGE_ERROR_EXIT, e)
    _run(workdir)


def _distributed_flags_problem() -> str | None:
    given = [FLAGS[name].present for name in ("coordinator_address", "num_processes", "process_id")]
    if any(given) and not all(given):
        return ("--coordinator_address, --num_processes and --process_id go together: pass all "
                "three on every process (or none: TPU pods and SLURM are detected)")
    if all(given) and FLAGS.process_id >= FLAGS.num_processes:
        return (f"--process_id={FLAGS.process_id} must be below --num_processes="
                f"{FLAGS.num_processes} (processes are numbered from 0)")
    return None


def _run(workdir: str) -> None:
    # Imported only now, so that a usage error above is reported without seconds of JAX start-up.
    import jax

    from mage_jax import host_memory, run_errors
    from mage_jax.training import sharding
    from mage_jax.training.train import train_and_evaluate

    if FLAGS.compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))
    sharding.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                          FLAGS.process_id)
    logging.info("JAX %s, process %d/%d, devices: %s", jax.__version__, jax.process_index(),
                 jax.process_count(), jax.devices())
    if not sharding.is_main_process():
        logging.set_verbosity(logging.WARNING)  # process 0 reports progress for all of them
    if hint := host_memory.slow_allocator_hint(jax.default_backend()):
        logging.warning("%s", hint)
    try:
        config_checks.check_with_library(FLAGS.config, jax.device_count())
        train_and_evaluate(FLAGS.config, workdir, FLAGS.mode, FLAGS.checkpoint_step)
    except config_checks.UsageError as e:
        _fail(str(e), USAGE_ERROR_EXIT, e)
    except run_errors.Preempted as e:
        logging.warning("%s", e)
        sys.exit(0)
    except run_errors.USER_ERRORS as e:
        # Errors the user can act on get their message, not a traceback.
        _fail(str(e), RUN_ERROR_EXIT, e)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
