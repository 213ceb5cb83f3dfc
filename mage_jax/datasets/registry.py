"""Get the dataset a config names: local Minari copy, else the project's generator, else download."""

from __future__ import annotations

import importlib

import minari
import ml_collections
from absl import logging

from mage_jax.data.minari_source import load_minari_dataset

# config.data.generator -> "module:function(dataset_id=..., **config.data.generator_kwargs) -> id"
GENERATORS = {
    "pointmaze": "mage_jax.datasets.pointmaze:generate_pointmaze_dataset",
    "kitchen": "mage_jax.datasets.kitchen:generate_kitchen_dataset",
    "record": "mage_jax.datasets.record:generate_recorded_dataset",
}
# Public namespace -> the config variant that records look-alike data locally.
_RECORDED_ALTERNATIVES = {
    "D4RL/antmaze/": "experiments/antmaze.py:local",
    **{f"D4RL/{task}/": f"experiments/adroit.py:{task},local"
       for task in ("pen", "hammer", "door", "relocate")},
    **{f"mujoco/{env}/": f"experiments/locomotion.py:{env},local"
       for env in ("halfcheetah", "hopper", "walker2d")},
}


def _is_local(dataset_id: str) -> bool:
    try:
        return dataset_id in minari.list_local_datasets()
    except Exception:  # a half-written dataset folder must not hide the real error below
        return False


def ensure_dataset(data_config: ml_collections.ConfigDict) -> minari.MinariDataset:
    """Load `data_config.dataset_id`, generating it first when a local generator is configured."""
    dataset_id = data_config.dataset_id
    if data_config.generator and not _is_local(dataset_id):
        if data_config.generator not in GENERATORS:
            raise ValueError(f"unknown data.generator {data_config.generator!r}; "
                             f"known: {', '.join(GENERATORS)}")
        module_name, function_name = GENERATORS[data_config.generator].split(":")
        generate = getattr(importlib.import_module(module_name), function_name)
        kwargs = dict(data_config.generator_kwargs)
        logging.info("dataset %s is not local: generating it with %s(%s)", dataset_id,
                     function_name, kwargs)
        generate(dataset_id=dataset_id, **kwargs)
    return load_minari_dataset(dataset_id, download=data_config.download,
                               local_alternative=_local_alternative(dataset_id))


def _local_alternative(dataset_id: str) -> str:
    if dataset_id.startswith("D4RL/kitchen/"):
        return ("experiments/kitchen.py:scripted trains on locally generated scripted "
                "FrankaKitchen demonstrations")
    if dataset_id.startswith("D4RL/pointmaze/"):
        return ("experiments/pointmaze.py:local generates local/pointmaze/* with the D4RL recipe "
                "(python -m mage_jax.datasets.pointmaze)")
    for prefix, variant in _RECORDED_ALTERNATIVES.items():
        if dataset_id.startswith(prefix):
            return (f"{variant} records random-policy episodes in this dataset's layout on this machine "
                    "(python -m mage_jax.datasets.record); a smoke test of the code paths, not a benchmark")
    return ""
