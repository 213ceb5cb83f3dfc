"""The multi-scale (next-scale prediction) transformer over the autoencoder's K token maps.

VAR-style, on the time axis: the sequence is the concatenation of all scales, l_1 + ... + l_K tokens.
Scale 1 is the start token(s) (the condition embedding plus a learned start position); scale k > 1 reads
the teacher-forcing input, the cumulative code sum of scales < k area-downsampled to l_k (C-dim,
projected to the width). A token attends to every token of its own and all coarser scales
(block-causal), so all scales train in one forward and sample with a KV cache one scale at a time.

The condition (R_0, s_0) is embedded by an MLP and used twice: as the start token and as AdaLN
(shift, scale, gate) in every block and before the head. Condition dropout drops the return only (R_0
zeroed, a flag set) and keeps s_0: classifier-free guidance then contrasts p(plan | s_0, R_0) with
p(plan | s_0), and the unconditional branch still plans from where the agent is.

Parameters are float32; matmuls run in `dtype` (`model.dtype`; 'auto' = bfloat16 on GPU/TPU, float32
on CPU); layer norms, the attention logits and softmax, the condition MLP and the head's logits (what
the losses and sampling read) are float32. The residual stream stays float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

KVCache = tuple[tuple[jax.Array, jax.Array], ...]  # per block: keys, values (B, L, heads, head_dim)

_MAX_QK_SCALE = math.log(100.0)  # VAR's clamp of the learned attention temperature


def _layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Affine-free layer norm in float32 (AdaLN supplies the affine part)."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), -1, keepdims=True) + eps)


def scale_levels(scales: Sequence[int]) -> np.ndarray:
    """The 0-based scale index of every token of the flattened sequence, shape (sum(scales),)."""
    return np.repeat(np.arange(len(scales)), scales)


def block_causal_mask(scales: Sequence[int]) -> np.ndarray:
    """(L, L) boolean: query i may attend key j iff scale(j) <= scale(i)."""
    levels = scale_levels(scales)
    return levels[:, None] >= levels[None, :]


def scale_offsets(scales: Sequence[int]) -> list[int]:
    """Start index of every scale in the flattened sequence, plus the total length at the end."""
    return [0, *np.cumsum(scales).tolist()]


class TokenDense(nn.Dense):
    """Dense over (..., features) applied as one 2-D matmul on the flattened tokens.

    With 3-D inputs XLA:CPU computes each kernel gradient from a transposed copy of the activation
    gradient, fusing the whole residual-gradient chain into every copy: that made the stage-2
    backward pass 7x its forward. Flattened, the kernel gradient is a plain matmul.
    """

    @nn.compact
    def __call__(self, x):
        lead = x.shape[:-1]
        return super().__call__(x.reshape(-1, x.shape[-1])).reshape(*lead, self.features)


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block with AdaLN (shift, scale, gate) from the condition embedding."""

    width: int
    heads: int
    mlp_ratio: float
    qk_norm: bool
    dtype: jnp.dtype
    out_init_std: float

    def setup(self):
        if self.width % self.heads:
            raise ValueError(f"tf_width={self.width} must be divisible by tf_heads={self.heads}")
        dense = lambda n, std=0.02: TokenDense(n, dtype=self.dtype, param_dtype=jnp.float32,
                                               kernel_init=nn.initializers.normal(std))
        # Zero-initialised modulation: at init every block is a plain pre-LN block (gate 1, scale 1).
        self.ada = nn.Dense(6 * self.width, kernel_init=nn.initializers.zeros, name="adaln")
        self.qkv = dense(3 * self.width)  # fused projection
        self.attn_out = dense(self.width, self.out_init_std)
        self.mlp_in = dense(int(self.width * self.mlp_ratio))
        self.mlp_out = dense(self.width, self.out_init_std)
        if self.qk_norm:
            self.log_qk_scale = self.param("log_qk_scale", nn.initializers.constant(math.log(4.0)),
                                           (self.heads,))

    def modulation(self, cond_emb: jax.Array) -> jax.Array:
        """(B, W) condition embedding -> (B, 6, W): attn shift/scale/gate, mlp shift/scale/gate."""
        return self.ada(nn.silu(cond_emb)).reshape(cond_emb.shape[0], 6, self.width)

    def _qkv(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Fused projection -> q, k, v, each (B, n, heads, head_dim) in the compute dtype.

        Tokens before heads throughout (the layout `jax.nn.dot_product_attention` takes), so no
        transposes: on XLA:CPU they cost more than the attention matmuls themselves.
        """
        b, n, _ = h.shape
        qkv = self.qkv(h).reshape(b, n, 3, self.heads, self.width // self.heads)
        v = qkv[:, :, 2]
        if self.qk_norm:
            qk = _l2_normalize(qkv[:, :, :2])  # one reduction for q and k
            temperature = jnp.exp(jnp.minimum(self.log_qk_scale, _MAX_QK_SCALE))
            q, k = qk[:, :, 0] * temperature[:, None], qk[:, :, 1]
        else:
            q = qkv[:, :, 0].astype(jnp.float32) / math.sqrt(self.width // self.heads)
            k = qkv[:, :, 1]
        return q.astype(self.dtype), k.astype(self.dtype), v.astype(self.dtype)

    def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
        """Softmax attention (float32 logits; q is pre-scaled) -> (B, n, W)."""
        out = jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask[None, None],
                                           scale=1.0)
        return out.reshape(*out.shape[:2], self.width)

    def __call__(self, x: jax.Array, mod: jax.Array, mask: jax.Array | None = None,
                 cache: tuple[jax.Array, jax.Array] | None = None, start: int = 0,
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """One block over x (B, n, W) float32.

        Without `cache`, x is the whole sequence and `mask` the (n, n) block-causal mask. With a
        cache ((B, L, heads, head_dim) keys and values), x holds the tokens at positions
        start..start+n (one whole scale): their keys and values are written there and they attend
        to positions < start+n, which is exactly the block-causal pattern, so no mask is needed.
        """
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (mod[:, i, None] for i in range(6))
        h = _layer_norm(x) * (1 + scale_a) + shift_a
        q, k, v = self._qkv(h)
        if cache is not None:
            end = start + x.shape[1]
            cache_k = jax.lax.dynamic_update_slice_in_dim(cache[0], k, start, axis=1)
            cache_v = jax.lax.dynamic_update_slice_in_dim(cache[1], v, start, axis=1)
            cache = (cache_k, cache_v)
            k, v = cache_k[:, :end], cache_v[:, :end]
        x = x + (1 + gate_a) * self.attn_out(self._attend(q, k, v, mask)).astype(jnp.float32)
        h = _layer_norm(x) * (1 + scale_m) + shift_m
        h = self.mlp_out(nn.gelu(self.mlp_in(h), approximate=True))
        return x + (1 + gate_m) * h.astype(jnp.float32), cache


class NextScaleTransformer(nn.Module):
    """p(m_1..m_K | s_0, R_0) over a shared codebook; see the module docstring."""

    scales: tuple[int, ...]
    vocab_size: int
    code_dim: int
    cond_dim: int  # 1 + state_dim: (R_0, s_0)
    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    dtype: jnp.dtype = jnp.float32

    @property
    def seq_len(self) -> int:
        return int(sum(self.scales))

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def setup(self):
        normal = nn.initializers.normal(0.02)
        self.cond_in = nn.Dense(self.width, kernel_init=nn.initializers.lecun_normal())
        self.cond_out = nn.Dense(self.width, kernel_init=normal)
        # The best return the data shows from a state (an expectile of R_0 given s_0): what acting
        # can condition on instead of a hand-set target (sampling.learned_target).
        self.return_head = nn.Sequential([nn.Dense(self.width), nn.silu, nn.Dense(1)])
        self.pos_start = self.param("pos_start", normal, (self.scales[0], self.width))
        self.pos_embed = self.param("pos_embed", normal, (self.seq_len, self.width))
        self.level_embed = self.param("level_embed", normal, (len(self.scales), self.width))
        self.input_proj = TokenDense(self.width, dtype=self.dtype, kernel_init=normal)
        out_std = 0.02 / math.sqrt(2 * self.depth)  # GPT-2 style residual-branch scaling
        self.blocks = [AdaLNBlock(self.width, self.heads, self.mlp_ratio, self.qk_norm, self.dtype,
                                  out_std, name=f"block_{i}") for i in range(self.depth)]
        self.head_ada = nn.Dense(2 * self.width, kernel_init=nn.initializers.zeros)
        self.head = TokenDense(self.vocab_size, kernel_init=normal)  # float32 logits

    # ----- condition ---------------------------------------------------------------------------
    def embed_condition(self, cond: jax.Array, null_mask: jax.Array | None = None) -> jax.Array:
        """(B, 1+S) condition -> (B, W); rows where `null_mask` is True drop the return R_0 only."""
        if cond.ndim != 2 or cond.shape[-1] != self.cond_dim:
            raise ValueError(f"condition must be (batch, {self.cond_dim}) = (R_0, s_0); "
                             f"got shape {cond.shape}")
        cond = cond.astype(jnp.float32)
        dropped = (jnp.zeros(cond.shape[:1], jnp.float32) if null_mask is None
                   else null_mask.astype(jnp.float32))
        # The return is zeroed and a flag says so (0 is a real return, so zeroing alone would not
        # tell); s_0 is kept, so the unconditional branch of guidance still knows the start.
        cond = jnp.concatenate([dropped[:, None], cond[:, :1] * (1.0 - dropped[:, None]), cond[:, 1:]],
                               axis=-1)
        return self.cond_out(nn.silu(self.cond_in(cond)))

    def predict_return(self, states: jax.Array) -> jax.Array:
        """(B, S) normalised states -> (B,) the learned target return R_0 (scaled units)."""
        return self.return_head(states.astype(jnp.float32))[:, 0]

    def init_all(self, cond: jax.Array, inputs: jax.Array) -> jax.Array:
        """Touches every submodule (the return head is not on the logits' path), for `init`."""
        self.predict_return(cond[:, 1:])
        return self(cond, inputs)

    def modulations(self, cond_emb: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
        """Per-sample AdaLN parameters, computed once and reused for every scale."""
        blocks = tuple(block.modulation(cond_emb) for block in self.blocks)
        head = self.head_ada(nn.silu(cond_emb)).reshape(cond_emb.shape[0], 2, self.width)
        return blocks, head

    # ----- token embeddings and head -----------------------------------------------------------
    def _start_tokens(self, cond_emb: jax.Array) -> jax.Array:
        return cond_emb[:, None, :] + self.pos_start[None]

    def _project_inputs(self, inputs: jax.Array) -> jax.Array:
        if inputs.shape[-1] != self.code_dim:
            raise ValueError(f"teacher-forcing inputs must have code_dim={self.code_dim} channels; "
                             f"got shape {inputs.shape}")
        return self.input_proj(inputs).astype(jnp.float32)

    def _logits(self, x: jax.Array, head_mod: jax.Array) -> jax.Array:
        h = _layer_norm(x) * (1 + head_mod[:, 1, None]) + head_mod[:, 0, None]
        return self.head(h)

    # ----- full (training) forward -------------------------------------------------------------
    def __call__(self, cond: jax.Array, inputs: jax.Array,
                 null_mask: jax.Array | None = None) -> jax.Array:
        """Logits (B, L, V) for all scales at once.

        cond: (B, 1+S); inputs: (B, L - l_1, C) teacher-forcing inputs of scales 2..K;
        null_mask: (B,) bool, rows whose return is dropped (condition dropout / CFG).
        """
        expected = self.seq_len - self.scales[0]
        if inputs.ndim != 3 or inputs.shape[1] != expected:
            raise ValueError(f"teacher-forcing inputs must be (batch, {expected}, {self.code_dim}) "
                             f"for scales {self.scales}; got shape {inputs.shape}")
        cond_emb = self.embed_condition(cond, null_mask)
        block_mods, head_mod = self.modulations(cond_emb)
        x = jnp.concatenate([self._start_tokens(cond_emb), self._project_inputs(inputs)], axis=1)
        x = x + self.level_embed[scale_levels(self.scales)][None] + self.pos_embed[None]
        mask = jnp.asarray(block_causal_mask(self.scales))
        for block, mod in zip(self.blocks, block_mods, strict=True):
            x, _ = block(x, mod, mask=mask)
        return self._logits(x, head_mod)

    # ----- cached (sampling) forward -----------------------------------------------------------
    def forward_scale(self, cond_emb: jax.Array, modulations, cache: KVCache, scale_index: int,
                      inputs: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
        """Logits (B, l_k, V) of scale k (0-based, static) given the cache of scales < k.

        `inputs` (B, l_k, C) is the teacher-forcing input of scale k (ignored for k = 0, whose
        tokens are the start tokens). Returns the logits and the cache with scale k written.
        """
        k = scale_index
        start, end = scale_offsets(self.scales)[k:k + 2]
        x = self._start_tokens(cond_emb) if k == 0 else self._project_inputs(inputs)
        x = x + self.level_embed[k][None, None] + self.pos_embed[None, start:end]
        block_mods, head_mod = modulations
        new_cache = []
        for block, mod, layer_cache in zip(self.blocks, block_mods, cache, strict=True):
            x, layer_cache = block(x, mod, cache=layer_cache, start=start)
            new_cache.append(layer_cache)
        return self._logits(x, head_mod), tuple(new_cache)


def init_kv_cache(model: NextScaleTransformer, batch: int) -> KVCache:
    """Zero keys/values for every block: (batch, sum(scales), heads, head_dim), compute dtype."""
    shape = (batch, model.seq_len, model.heads, model.head_dim)
    return tuple((jnp.zeros(shape, model.dtype), jnp.zeros(shape, model.dtype))
                 for _ in range(model.depth))


COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")  # model.dtype


def compute_dtype(name: str) -> jnp.dtype:
    """`model.dtype` -> the matmul dtype; 'auto' is bfloat16 on accelerators (GPU/TPU) and float32 on
    CPU, where bfloat16 matmuls measured slower (benchmarks/THROUGHPUT.md) as well as less precise."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.dtype={name!r} is not supported; use one of: " + ", ".join(COMPUTE_DTYPES))
    if name == "auto":
        name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return jnp.dtype(name)


def make_transformer(model_config: ml_collections.ConfigDict, state_dim: int) -> NextScaleTransformer:
    """The transformer described by `config.model` for states of `state_dim` dimensions."""
    c = model_config
    dtype = compute_dtype(c.get("dtype", "auto"))
    return NextScaleTransformer(
        scales=tuple(int(s) for s in c.scales), vocab_size=int(c.vocab_size),
        code_dim=int(c.code_dim), cond_dim=1 + int(state_dim), width=int(c.tf_width),
        depth=int(c.tf_depth), heads=int(c.tf_heads), mlp_ratio=float(c.tf_mlp_ratio),
        qk_norm=bool(c.tf_qk_norm), dtype=dtype)


def init_transformer_params(model: NextScaleTransformer, key: jax.Array) -> dict:
    """Random parameters from dummy shapes (batch 1), initialised under jit (eager init is slow)."""
    cond = jnp.zeros((1, model.cond_dim), jnp.float32)
    inputs = jnp.zeros((1, model.seq_len - model.scales[0], model.code_dim), jnp.float32)
    return jax.jit(functools.partial(model.init, method=NextScaleTransformer.init_all))(key, cond, inputs)
