"""Errors a user can act on: the launcher prints their message instead of a traceback."""

from mage_jax.data.episodes import DatasetContentError
from mage_jax.data.minari_source import DatasetUnavailableError
from mage_jax.training.checkpoints import CheckpointMismatchError
from mage_jax.training.loop import NonFiniteLossError, Preempted

USER_ERRORS = (DatasetUnavailableError, DatasetContentError, CheckpointMismatchError, NonFiniteLossError,
               FileNotFoundError)

__all__ = ["USER_ERRORS", "Preempted"]
