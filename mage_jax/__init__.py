"""MAGE: multi-scale autoregressive generation for offline RL, in JAX/Flax."""

__version__ = "0.1.0"
