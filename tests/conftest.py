"""Test-wide settings: offline, CPU-only, a private Minari dataset directory and compilation cache."""

import atexit
import os
import shutil
import tempfile

# Set before anything imports minari / huggingface_hub / jax.
os.environ["HF_HUB_OFFLINE"] = "1"  # a missing dataset fails at once instead of retrying DNS
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="mage_jax_minari_")
atexit.register(shutil.rmtree, os.environ["MINARI_DATASETS_PATH"], ignore_errors=True)
# Launcher tests run the same programs in several subprocesses: compile each once per session.
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mage_jax_xla_")
atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Files are dealt to the xdist workers in collection order (`--no-loadscope-reorder`): start the
# longest (subprocesses that train and evaluate whole runs) first, so that no worker is left alone
# with one at the end.
SLOWEST_FIRST = ("test_multiprocess.py", "test_launcher.py", "test_families.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
