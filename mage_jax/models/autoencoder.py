"""The condition-guided multi-scale trajectory autoencoder (MTAE) with its adapter and inverse dynamics.

Segments are (B, H, 1+S): channel 0 the scaled return-to-go, then the normalised state; actions are
not modelled. A 1-D conv ResNet encoder downsamples time by `downsample` to the latent f (B, T_lat, C),
the multi-scale quantiser turns f into K token maps and f_hat, and a decoder conditioned on R_0 (AdaGN:
every group norm is shifted and scaled by an embedding of R_0) reconstructs the segment. Two heads read
the same latent:

* the condition adapter D' predicts the start (R_0, s_0) from the decoder's features at t = 0, and
  L_cond = ||D'(Z, R_0)[t=0] - (R_0, s_0)||^2 keeps generated plans anchored at the real start;
* latent inverse dynamics I(f_hat, s_0) -> the first `action_horizon` actions (an MLP on the
  flattened f_hat and s_0): this is how the agent acts.

Every public method is usable through `model.apply(params, ..., method=name)`, which is how the
transformer's training and sampling reach the quantiser (`embed`, `add_scale`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mage_jax.models.quantizer import MultiScaleQuantizer, QuantizerOutput, validate_scales


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    """Two k=3 convs with group norms; optional AdaGN modulation from a condition embedding."""

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, cond_emb: jax.Array | None = None) -> jax.Array:
        h = x
        for i in range(2):
            h = nn.GroupNorm(_groups(self.channels), use_scale=cond_emb is None,
                             use_bias=cond_emb is None, name=f"norm_{i}")(h)
            if cond_emb is not None:
                shift, scale = jnp.split(
                    nn.Dense(2 * self.channels, kernel_init=nn.initializers.zeros,
                             name=f"ada_{i}")(cond_emb)[:, None], 2, axis=-1)
                h = h * (1 + scale) + shift
            h = nn.Conv(self.channels, (3,), padding="SAME", name=f"conv_{i}")(nn.silu(h))
        return x + h


class Encoder(nn.Module):
    hidden: int
    num_res_blocks: int
    downsample: int
    code_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.hidden, (3,), padding="SAME")(x)
        for level in range(int(math.log2(self.downsample))):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.hidden)(h)
            h = nn.Conv(self.hidden, (4,), strides=(2,), padding=((1, 1),), name=f"down_{level}")(h)
        for _ in range(self.num_res_blocks):
            h = ResBlock(self.hidden)(h)
        h = nn.silu(nn.GroupNorm(_groups(self.hidden))(h))
        return nn.Conv(self.code_dim, (3,), padding="SAME")(h)


class Decoder(nn.Module):
    """f_hat (B, T_lat, C) and the R_0 embedding -> features (B, H, hidden)."""

    hidden: int
    num_res_blocks: int
    downsample: int

    @nn.compact
    def __call__(self, f_hat: jax.Array, cond_emb: jax.Array) -> jax.Array:
        h = nn.Conv(self.hidden, (3,), padding="SAME")(f_hat)
        for _ in range(self.num_res_blocks):
            h = ResBlock(self.hidden)(h, cond_emb)
        for level in range(int(math.log2(self.downsample))):
            h = jnp.repeat(h, 2, axis=1)  # nearest upsampling, then a conv to smooth it
            h = nn.Conv(self.hidden, (3,), padding="SAME", name=f"up_{level}")(h)
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.hidden)(h, cond_emb)
        return nn.silu(nn.GroupNorm(_groups(self.hidden))(h))


class TrajectoryAutoencoder(nn.Module):
    """MTAE + adapter D' + latent inverse dynamics I; see the module docstring."""

    state_dim: int
    action_dim: int
    horizon: int
    scales: tuple[int, ...]
    vocab_size: int
    code_dim: int
    hidden: int = 128
    num_res_blocks: int = 2
    downsample: int = 4
    phi_ratio: float = 0.5
    num_phis: int = 4
    vq_beta: float = 0.25
    inv_hidden: int = 256
    inv_layers: int = 2
    action_horizon: int = 1

    @property
    def latent_length(self) -> int:
        return self.horizon // self.downsample

    def setup(self):
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ValueError(f"model.downsample must be a power of 2; got {self.downsample}")
        if self.horizon % self.downsample:
            raise ValueError(f"data.horizon={self.horizon} must be divisible by model.downsample="
                             f"{self.downsample}")
        if not 1 <= self.action_horizon <= self.horizon:
            raise ValueError(f"model.action_horizon={self.action_horizon} must be in [1, horizon]")
        validate_scales(self.scales, self.latent_length)
        self.encoder = Encoder(self.hidden, self.num_res_blocks, self.downsample, self.code_dim)
        self.quantizer = MultiScaleQuantizer(self.scales, self.vocab_size, self.code_dim,
                                             self.phi_ratio, self.num_phis, self.vq_beta)
        self.rtg_embed = nn.Sequential([nn.Dense(self.hidden), nn.silu, nn.Dense(self.hidden)])
        self.decoder = Decoder(self.hidden, self.num_res_blocks, self.downsample)
        self.output = nn.Conv(1 + self.state_dim, (3,), padding="SAME")
        self.adapter = nn.Sequential([nn.Dense(self.hidden), nn.silu, nn.Dense(1 + self.state_dim)])
        inv = []
        for _ in range(self.inv_layers):
            inv += [nn.Dense(self.inv_hidden), nn.gelu]
        self.inverse = nn.Sequential([*inv, nn.Dense(self.action_horizon * self.action_dim)])

    # ----- encoder and quantiser ----------------------------------------------------------------
    def encode(self, segments: jax.Array) -> jax.Array:
        """(B, H, 1+S) segments -> latent f (B, T_lat, C)."""
        if segments.ndim != 3 or segments.shape[1:] != (self.horizon, 1 + self.state_dim):
            raise ValueError(f"segments must be (batch, {self.horizon}, {1 + self.state_dim}) = "
                             f"(RTG, state) windows; got {segments.shape}")
        return self.encoder(segments)

    def quantize(self, latent: jax.Array) -> QuantizerOutput:
        return self.quantizer(latent)

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.quantizer.embed(tokens)

    def embed_soft(self, probs: jax.Array) -> jax.Array:
        return self.quantizer.embed_soft(probs)

    def add_scale(self, f_hat: jax.Array, codes: jax.Array, scale_index: int) -> jax.Array:
        return self.quantizer.add_scale(f_hat, codes, scale_index)

    def tokens_to_f_hat(self, tokens: Sequence[jax.Array]) -> jax.Array:
        return self.quantizer.tokens_to_f_hat(tokens)

    def teacher_forcing_inputs(self, codes: Sequence[jax.Array]) -> jax.Array:
        return self.quantizer.teacher_forcing_inputs(codes)

    # ----- decoder, adapter, inverse dynamics ---------------------------------------------------
    def _features(self, f_hat: jax.Array, rtg0: jax.Array) -> jax.Array:
        return self.decoder(f_hat, self.rtg_embed(rtg0[:, None].astype(jnp.float32)))

    def decode(self, f_hat: jax.Array, rtg0: jax.Array) -> jax.Array:
        """f_hat (B, T_lat, C) and R_0 (B,) -> reconstructed segment (B, H, 1+S)."""
        return self.output(self._features(f_hat, rtg0))

    def adapt(self, f_hat: jax.Array, rtg0: jax.Array) -> jax.Array:
        """D'(Z, R_0)[t=0]: the start (R_0, s_0) the plan implies, (B, 1+S)."""
        return self._adapt_features(self._features(f_hat, rtg0), rtg0)

    def _adapt_features(self, features: jax.Array, rtg0: jax.Array) -> jax.Array:
        return self.adapter(jnp.concatenate([features[:, 0], rtg0[:, None]], axis=-1))

    def inverse_dynamics(self, f_hat: jax.Array, s0: jax.Array) -> jax.Array:
        """I(f_hat, s_0) -> the plan's first `action_horizon` actions (B, n, A)."""
        x = jnp.concatenate([f_hat.reshape(f_hat.shape[0], -1), s0.astype(jnp.float32)], axis=-1)
        return self.inverse(x).reshape(f_hat.shape[0], self.action_horizon, self.action_dim)

    def __call__(self, segments: jax.Array) -> dict:
        """Training forward: everything stage 1's losses need."""
        latent = self.encode(segments)
        q = self.quantize(latent)
        rtg0 = segments[:, 0, 0]
        features = self._features(q.f_hat, rtg0)
        return {"latent": latent, "quantized": q, "reconstruction": self.output(features),
                "start": self._adapt_features(features, rtg0),
                "actions": self.inverse_dynamics(q.f_hat, segments[:, 0, 1:])}


def make_autoencoder(model_config: ml_collections.ConfigDict, state_dim: int, action_dim: int,
                     horizon: int) -> TrajectoryAutoencoder:
    """The autoencoder described by `config.model` for this dataset's dimensions and `data.horizon`."""
    c = model_config
    return TrajectoryAutoencoder(
        state_dim=int(state_dim), action_dim=int(action_dim), horizon=int(horizon),
        scales=tuple(int(s) for s in c.scales), vocab_size=int(c.vocab_size),
        code_dim=int(c.code_dim), hidden=int(c.hidden_channels), num_res_blocks=int(c.num_res_blocks),
        downsample=int(c.downsample), phi_ratio=float(c.phi_ratio), num_phis=int(c.num_phis),
        vq_beta=float(c.vq_beta), inv_hidden=int(c.inv_hidden), inv_layers=int(c.inv_layers),
        action_horizon=int(c.action_horizon))


def inverse_head_params(ae_params: dict) -> dict:
    """The latent inverse-dynamics head's parameters inside the autoencoder's."""
    return ae_params["params"]["inverse"]


def with_inverse_head(ae_params: dict, head_params: dict | None) -> dict:
    """The autoencoder's parameters with the inverse-dynamics head replaced (None: unchanged)."""
    if head_params is None:
        return ae_params
    return {**ae_params, "params": {**ae_params["params"], "inverse": head_params}}


def init_autoencoder_params(model: TrajectoryAutoencoder, key: jax.Array) -> dict:
    """Random parameters from a dummy batch, initialised under jit."""
    segments = jnp.zeros((1, model.horizon, 1 + model.state_dim), jnp.float32)
    return jax.jit(model.init)(key, segments)
