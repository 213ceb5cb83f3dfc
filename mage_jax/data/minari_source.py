"""Load a Minari dataset: the local copy, else a bounded download, else one clear error.

minari 0.5.4 looks for `<MINARI_DATASETS_PATH>/<id>/data` (default root `~/.minari/datasets`).
With `download=True` it lists the remote (Hugging Face `hf://farama-minari` unless MINARI_REMOTE
says otherwise) through `huggingface_hub`, which is an optional minari extra (`minari[hf]`). When
the host cannot be resolved, huggingface_hub retries with back-off for ~25 s before failing; under
`HF_HUB_OFFLINE=1` it fails at once. So before downloading we (1) skip the remote entirely when
HF_HUB_OFFLINE is set, (2) check that huggingface_hub is importable, and (3) resolve and connect to
the remote host in a daemon thread with a short timeout (skipped behind an HTTPS proxy); only then
is minari asked to download.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass

import minari

# A namespace of one or more `/`-separated parts, a name, and a version: `D4RL/kitchen/mixed-v2`.
DATASET_ID_PATTERN = re.compile(
    r"^(?P<namespace>[\w-]+(?:/[\w-]+)*)/(?P<name>[\w-]+?)-v(?P<version>\d+)$")
DEFAULT_CONNECT_TIMEOUT_S = 5.0
_TRUE_VALUES = {"1", "on", "yes", "true"}  # how huggingface_hub reads boolean environment variables
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class DatasetUnavailableError(RuntimeError):
    """The dataset is neither local nor downloadable; the message says why and what to do."""


@dataclass(frozen=True)
class KnownDataset:
    """What the project knows about a public dataset id before loading it."""

    task: str  # benchmark family: kitchen | antmaze | pointmaze | adroit | locomotion
    obs_family: str  # observation flattening, see mage_jax.data.observations
    local_alternative: str  # what to run instead when the dataset cannot be had ('' = none)


_KITCHEN_LOCAL = ("use experiments/kitchen.py:scripted to generate local scripted FrankaKitchen "
                  "demonstrations")
_POINTMAZE_LOCAL = ("use experiments/pointmaze.py:local (or python -m mage_jax.datasets.pointmaze) "
                    "to generate the maze2d recipe locally")


def _known_datasets() -> dict[str, KnownDataset]:
    table: dict[str, KnownDataset] = {}
    for name in ("complete", "partial", "mixed"):
        table[f"D4RL/kitchen/{name}-v2"] = KnownDataset("kitchen", "kitchen", _KITCHEN_LOCAL)
    for name in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play",
                 "large-diverse"):
        table[f"D4RL/antmaze/{name}-v1"] = KnownDataset("antmaze", "antmaze", "")
    for maze in ("umaze", "medium", "large"):
        for suffix in ("", "-dense"):
            table[f"D4RL/pointmaze/{maze}{suffix}-v2"] = KnownDataset("pointmaze", "maze",
                                                                      _POINTMAZE_LOCAL)
    for task in ("pen", "hammer", "door", "relocate"):
        for data in ("human", "cloned", "expert"):
            table[f"D4RL/{task}/{data}-v2"] = KnownDataset("adroit", "box", "")
    for env in ("halfcheetah", "hopper", "walker2d"):
        for data in ("medium", "medium-replay", "expert"):
            table[f"mujoco/{env}/{data}-v0"] = KnownDataset("locomotion", "box", "")
    return table


KNOWN_DATASETS: dict[str, KnownDataset] = _known_datasets()


def validate_dataset_id(dataset_id: str) -> None:
    """Raise DatasetUnavailableError unless `dataset_id` looks like `namespace/name-vN`."""
    if not isinstance(dataset_id, str) or not DATASET_ID_PATTERN.match(dataset_id):
        raise DatasetUnavailableError(
            f"malformed Minari dataset id {dataset_id!r}: ids have the form 'namespace/name-vN', "
            "e.g. 'D4RL/kitchen/mixed-v2' or 'local/pointmaze/umaze-v0'.")


def minari_datasets_path() -> str:
    """The dataset root minari searches: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    if root is None:
        root = os.path.join(os.path.expanduser("~"), ".minari", "datasets")
    return root


def is_local_dataset(dataset_id: str) -> bool:
    """True when minari would load `dataset_id` without downloading."""
    return os.path.exists(os.path.join(minari_datasets_path(), dataset_id, "data"))


def load_minari_dataset(dataset_id: str, download: bool = True, local_alternative: str = "",
                        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                        ) -> minari.MinariDataset:
    """Load `dataset_id` from the local Minari root, else download it when `download` is set.

    Raises one DatasetUnavailableError naming the id, the root searched, the reason, and the local
    alternative (`local_alternative`, else the one KNOWN_DATASETS lists for the id). It never waits
    long: the remote is skipped under HF_HUB_OFFLINE=1 and probed with `connect_timeout_s` first.
    """
    validate_dataset_id(dataset_id)
    if is_local_dataset(dataset_id):
        try:
            return minari.load_dataset(dataset_id)
        except Exception as error:  # any unreadable local copy gets the same message
            raise _unavailable(dataset_id, f"the local copy cannot be read ({_one_line(error)}); "
                               "delete its folder and regenerate or re-download it",
                               local_alternative) from error
    if not download:
        raise _unavailable(dataset_id, "it is not stored locally and download=False "
                           "(config.data.download)", local_alternative)
    reason = _remote_unreachable_reason(connect_timeout_s)
    if reason:
        raise _unavailable(dataset_id, reason, local_alternative)
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as error:  # unknown id, incompatible version, network, ...
        raise _unavailable(dataset_id, f"the download failed: {_one_line(error)}",
                           local_alternative) from error


def _unavailable(dataset_id: str, reason: str, local_alternative: str) -> DatasetUnavailableError:
    known = KNOWN_DATASETS.get(dataset_id)
    alternative = local_alternative or (known.local_alternative if known else "")
    lines = [f"Minari dataset {dataset_id!r} is not available.",
             f"  searched: {os.path.join(minari_datasets_path(), dataset_id)} "
             "(root from MINARI_DATASETS_PATH, default ~/.minari/datasets)",
             f"  reason: {reason}"]
    if alternative:
        lines.append(f"  alternative: {alternative}")
    else:
        lines.append("  to fix: copy the dataset into the root above, or run where the Minari "
                     "remote is reachable (unset HF_HUB_OFFLINE)")
    return DatasetUnavailableError("\n".join(lines))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _remote_unreachable_reason(timeout_s: float) -> str:
    """'' when a download may be attempted, else why not (checked within ~timeout_s seconds)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_VALUES:
        return "HF_HUB_OFFLINE is set, so no download was attempted"
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    if not remote.startswith("hf://"):
        return ""  # another remote kind (e.g. gcp://): leave the attempt to minari
    if importlib.util.find_spec("huggingface_hub") is None:
        return ("downloading needs huggingface_hub, which is not installed "
                "(pip install 'minari[hf]')")
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return ""  # traffic goes through a proxy: a direct probe would wrongly fail
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urllib.parse.urlparse(endpoint).hostname or endpoint
    port = urllib.parse.urlparse(endpoint).port or 443
    error = _probe_connection(host, port, timeout_s)
    if error:
        return f"the Minari remote host {host} is unreachable ({error}); are you offline?"
    return ""


def _probe_connection(host: str, port: int, timeout_s: float) -> str:
    """'' when a TCP connection to host:port opens within timeout_s, else the error text.

    Name resolution cannot be given a timeout, so the probe runs in a daemon thread that is simply
    abandoned when it takes too long.
    """
    outcome: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append("")
        except Exception as error:  # noqa: BLE001 - any failure means 'unreachable'
            outcome.append(_one_line(error))

    thread = threading.Thread(target=probe, daemon=True, name="minari-remote-probe")
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no connection within {timeout_s:g} s"
