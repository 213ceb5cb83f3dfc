"""Offline-RL data: Minari (or RLDS) episodes -> padded episode arrays -> on-device segment sampler.

The RLDS source (`mage_jax.data.rlds_source`) is not re-exported: it needs the optional `tfds`
extra.
"""

from mage_jax.data.episodes import (
    EpisodeArrays,
    episodes_from_lists,
    episodes_from_minari,
    returns_to_go,
)
from mage_jax.data.minari_source import (
    KNOWN_DATASETS,
    DatasetUnavailableError,
    load_minari_dataset,
    minari_datasets_path,
)
from mage_jax.data.normalization import NormStats, compute_norm_stats
from mage_jax.data.observations import OBS_FAMILIES, flatten_observations, infer_obs_family
from mage_jax.data.sampler import SegmentData, make_segment_data, sample_segments

__all__ = [
    "KNOWN_DATASETS",
    "OBS_FAMILIES",
    "DatasetUnavailableError",
    "EpisodeArrays",
    "NormStats",
    "SegmentData",
    "compute_norm_stats",
    "episodes_from_lists",
    "episodes_from_minari",
    "flatten_observations",
    "infer_obs_family",
    "load_minari_dataset",
    "make_segment_data",
    "minari_datasets_path",
    "returns_to_go",
    "sample_segments",
]
