"""Typed configurations of the shared blocks, as torchtitan and litgpt keep them: a family config
(`GPTConfig`, `BertConfig`, ...) produces one `StackConfig` per stack, which travels whole to the
stack and its blocks. Nothing is re-read by string key, nothing has a second default, and nothing is
patched after construction: what a block does is what its config says.

    StackConfig ─ n_layer, position scheme inside attention, final norm
      └ BlockConfig ─ width, pre/post-norm, residual dropout, causal, cross-attention
          ├ AttentionConfig ─ heads, kv heads, head width, biases, scale, window, dropout, backend
          ├ MLPConfig ─ hidden width, activation, gating, biases, activation dropout
          └ NormConfig ─ LayerNorm or RMSNorm, epsilon, bias, backend
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from zoo.blocks.backend import AttnImpl, NormImpl

Activation = Literal["gelu", "gelu_tanh", "quick_gelu", "relu", "silu"]
NormKind = Literal["layernorm", "rmsnorm"]
RelativePosition = Literal["none", "rope", "alibi", "t5"]


@dataclass(frozen=True)
class AttentionConfig:
    """Multi-head attention: `n_head` query heads of `head_dim` (None = d_model // n_head), `n_kv_head`
    key/value heads (None = n_head; fewer = grouped-query), projection `bias`, score `scale` (None =
    1/√head_dim), sliding `window`, `dropout` on the weights, and the backend `impl`."""

    n_head: int
    n_kv_head: Optional[int] = None
    head_dim: Optional[int] = None
    bias: bool = True
    scale: Optional[float] = None
    window: Optional[int] = None
    dropout: float = 0.0
    impl: AttnImpl = "torch"


@dataclass(frozen=True)
class MLPConfig:
    """Feed-forward: hidden width `d_ff`, `activation` (gated = GLU: SwiGLU with silu, GEGLU with gelu),
    projection `bias`, and `dropout` after the activation (BART's `activation_dropout`)."""

    d_ff: int
    activation: Activation = "gelu"
    gated: bool = False
    bias: bool = True
    dropout: float = 0.0


@dataclass(frozen=True)
class NormConfig:
    """`kind` ("layernorm" | "rmsnorm"), epsilon, LayerNorm bias, and the backend `impl`."""

    kind: NormKind = "layernorm"
    eps: float = 1e-5
    bias: bool = True
    impl: NormImpl = "torch"


@dataclass(frozen=True)
class BlockConfig:
    """One transformer block: self-attention, optional cross-attention, MLP, each a residual branch
    (pre-norm: x + f(norm(x)); post-norm: norm(x + f(x))), with `dropout` on every branch output."""

    d_model: int
    attention: AttentionConfig
    mlp: MLPConfig
    norm: NormConfig = field(default_factory=NormConfig)
    prenorm: bool = True
    dropout: float = 0.0
    causal: bool = False
    cross_attention: bool = False

    @property
    def head_dim(self) -> int:
        return self.attention.head_dim or self.d_model // self.attention.n_head


@dataclass(frozen=True)
class StackConfig:
    """`n_layer` blocks, the position scheme acting inside attention ("none", "rope", "alibi", "t5":
    one bias table per stack), its parameters, and whether a final norm follows the last block."""

    n_layer: int
    block: BlockConfig
    relative_position: RelativePosition = "none"
    rope_theta: float = 10000.0
    t5_num_buckets: int = 32
    t5_max_distance: int = 128
    final_norm: bool = True
