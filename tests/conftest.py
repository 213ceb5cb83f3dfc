"""Test-wide settings (offline, CPU-only, a private Minari dataset directory and compilation cache), and
the helpers several test files share: `from conftest import launch, QUICKTEST, TINY, ...`."""

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

# Set before anything imports minari / huggingface_hub / jax.
os.environ["HF_HUB_OFFLINE"] = "1"  # a missing dataset fails at once instead of retrying DNS
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests spend their time compiling tiny programs, not running them: without LLVM's costly
# optimisations XLA:CPU compiled and ran a cold quicktest run in 101 s instead of 151 s (2 busy
# cores), to the same validation metrics and score, and test_sampling.py took 81 s instead of 110 s.
# Set for this process and every subprocess a test starts (those that set XLA_FLAGS add it).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="mage_jax_minari_")
atexit.register(shutil.rmtree, os.environ["MINARI_DATASETS_PATH"], ignore_errors=True)
# Launcher tests run the same programs in several subprocesses: compile each once per session.
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mage_jax_xla_")
atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Files are dealt to the xdist workers in collection order (`--no-loadscope-reorder`): start the
# longest (subprocesses that train and evaluate whole runs) first, so that no worker is left alone
# with one at the end.
SLOWEST_FIRST = ("test_multiprocess.py", "test_launcher.py", "test_seeds.py", "test_families.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKTEST = "experiments/pointmaze.py:local,umaze,quicktest"
# Small enough for CI: a 5k-step dataset, few updates, short evaluation episodes, and five token scales
# instead of quicktest's eight: a launch is trace- and compile-bound, and every program that samples a
# plan unrolls one transformer pass per scale (a launch's CPU time: 92 s -> 60 s cold, 44 s -> 31 s
# with XLA's cache; benchmarks/notebook/2026-12-07.md#session-21).
TEST_SCALES = (1, 2, 4, 8, 16)
TINY = ["--config.data.generator_kwargs.steps=5000", "--config.train.log_every=10",
        "--config.eval.max_steps=10", "--config.eval.num_seeds=4", f"--config.model.scales={TEST_SCALES}"]


def launcher_command(workdir, *flags, config=QUICKTEST, tiny=True) -> list[str]:
    """`python -m mage_jax.main` as a user types it (with the TINY budget unless tiny=False)."""
    return [sys.executable, "-m", "mage_jax.main", f"--config={config}", f"--workdir={workdir}",
            *(TINY if tiny else []), *flags]


def start(workdir, *flags, config=QUICKTEST, tiny=True, env=None) -> subprocess.Popen:
    """The launcher in a subprocess, stdout and stderr together (a pipe: not a terminal)."""
    return subprocess.Popen(launcher_command(workdir, *flags, config=config, tiny=tiny), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def launch(workdir, *flags, timeout=600, **kwargs) -> tuple[int, str]:
    """Run the launcher to the end: (exit code, output)."""
    proc = start(workdir, *flags, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the launcher ran past {timeout} s:\n{out[-3000:]}") from None
    return proc.returncode, out


def load_experiment(arg: str):
    """The config `--config=experiments/<file>.py[:variants]` loads (locked, as the launcher gets it)."""
    path, _, variant = arg.partition(":")
    spec = importlib.util.spec_from_file_location("experiment", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant or None)


def set_fields(config, fields: dict):
    """Set dotted fields (`{"stage1.batch_size": 0}`) as --config.<field>= overrides would; returns config."""
    for field, value in fields.items():
        *sections, name = field.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[name] = value
    return config
