"""The transformer block and stacks (Vaswani et al., 2017), pre-norm (GPT-2, T5, LLaMA, CLIP) or
post-norm (BERT, BART), with optional cross-attention for encoder-decoder models.

A stack owns the position schemes that act inside attention (RoPE, ALiBi, T5 relative bias) and
hands each block what it needs, so every family is configuration over the same code.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from zoo.blocks.attention import Attention, KVCache, ScoreBias
from zoo.blocks.backend import AttnImpl, NormImpl
from zoo.blocks.mlp import MLP, Activation
from zoo.blocks.norms import NormKind, build_norm
from zoo.blocks.positions import RotaryEmbedding, T5RelativeBias, alibi_slopes

RelativePosition = Literal["none", "rope", "alibi", "t5"]


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention, and an MLP, each a residual branch.

    Pre-norm:  x = x + f(norm(x)).   Post-norm:  x = norm(x + f(x)).
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_ff: int,
        n_kv_head: Optional[int] = None,
        head_dim: Optional[int] = None,
        activation: Activation = "gelu",
        gated_mlp: bool = False,
        norm: NormKind = "layernorm",
        norm_eps: float = 1e-5,
        prenorm: bool = True,
        bias: bool = True,
        norm_bias: bool = True,
        causal: bool = False,
        window: Optional[int] = None,
        scale: Optional[float] = None,
        cross_attention: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        attn_impl: AttnImpl = "torch",
        norm_impl: NormImpl = "torch",
    ):
        super().__init__()
        self.prenorm = prenorm
        attn = dict(n_kv_head=n_kv_head, head_dim=head_dim, bias=bias, scale=scale, dropout=attn_dropout, impl=attn_impl)
        self.self_attn = Attention(d_model, n_head, causal=causal, window=window, **attn)
        self.self_attn_norm = build_norm(norm, d_model, norm_eps, norm_bias, norm_impl)
        if cross_attention:
            self.cross_attn = Attention(d_model, n_head, cross=True, **attn)
            self.cross_attn_norm = build_norm(norm, d_model, norm_eps, norm_bias, norm_impl)
        else:
            self.cross_attn = self.cross_attn_norm = None
        self.mlp = MLP(d_model, d_ff, activation, gated_mlp, bias, dropout)
        self.mlp_norm = build_norm(norm, d_model, norm_eps, norm_bias, norm_impl)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _residual(self, x, norm, fn):
        if self.prenorm:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        key_padding_mask: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        self_bias: Optional[ScoreBias] = None,
        cross_bias: Optional[ScoreBias] = None,
        cache: Optional[KVCache] = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = self._residual(x, self.self_attn_norm,
                           lambda h: self.self_attn(h, key_padding_mask, rope=rope, bias=self_bias, cache=cache, layer=layer))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_attn_norm,
                               lambda h: self.cross_attn(h, context_mask, context=context, bias=cross_bias, cache=cache, layer=layer))
        return self._residual(x, self.mlp_norm, self.mlp)


class TransformerStack(nn.Module):
    """`n_layer` blocks plus the position scheme acting inside attention and an optional final norm.

    Args:
        n_layer: number of blocks.
        relative_position: "none", "rope", "alibi" or "t5" (bias table in the stack, shared by all
            layers, as T5 computes it in the first layer and reuses it).
        rope_theta: RoPE base. t5_num_buckets, t5_max_distance: T5 bucket parameters.
        final_norm: apply a norm after the last block (pre-norm stacks).
        **block: arguments of `TransformerBlock` (d_model, n_head, d_ff, causal, cross_attention, ...).
    """

    def __init__(
        self,
        n_layer: int,
        relative_position: RelativePosition = "none",
        rope_theta: float = 10000.0,
        t5_num_buckets: int = 32,
        t5_max_distance: int = 128,
        final_norm: bool = True,
        **block,
    ):
        super().__init__()
        self.layers = nn.ModuleList(TransformerBlock(**block) for _ in range(n_layer))
        d_model, n_head = block["d_model"], block["n_head"]
        head_dim = block.get("head_dim") or d_model // n_head
        self.causal = block.get("causal", False)
        self.relative_position = relative_position
        self.rope = RotaryEmbedding(head_dim, rope_theta) if relative_position == "rope" else None
        if relative_position == "alibi":
            self.register_buffer("alibi", alibi_slopes(n_head), persistent=False)
        self.relative_bias = (
            T5RelativeBias(n_head, t5_num_buckets, t5_max_distance, bidirectional=not self.causal)
            if relative_position == "t5" else None
        )
        norm = block.get("norm", "layernorm")
        self.norm = (
            build_norm(norm, d_model, block.get("norm_eps", 1e-5), block.get("norm_bias", True), block.get("norm_impl", "torch"))
            if final_norm else None
        )

    def self_bias(self) -> Optional[ScoreBias]:
        if self.relative_bias is not None:
            rb = self.relative_bias
            return ScoreBias(t5_table=rb.table(), t5_num_buckets=rb.num_buckets,
                             t5_max_distance=rb.max_distance, t5_bidirectional=rb.bidirectional)
        if self.relative_position == "alibi":
            return ScoreBias(alibi_slopes=self.alibi)
        return None

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        key_padding_mask: Optional[torch.Tensor] = None,  # (B, past + T), True = attend
        position_ids: Optional[torch.Tensor] = None,  # (B, T), for RoPE
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        rope = None
        if self.rope is not None:
            if position_ids is None:
                past = cache.seq_len if cache is not None else 0
                position_ids = torch.arange(past, past + x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
            rope = self.rope(position_ids)
        bias = self.self_bias()
        for i, layer in enumerate(self.layers):
            x = layer(x, key_padding_mask, context, context_mask, rope, bias, None, cache, i)
        return self.norm(x) if self.norm is not None else x


class EncoderStack(TransformerStack):
    """A bidirectional stack (BERT, the T5/BART encoders, CLIP's vision tower)."""

    def __init__(self, n_layer: int, **kwargs):
        super().__init__(n_layer, **{**kwargs, "causal": False, "cross_attention": False})


class DecoderStack(TransformerStack):
    """A causal stack; with `cross_attention=True`, the decoder of an encoder-decoder model."""

    def __init__(self, n_layer: int, **kwargs):
        super().__init__(n_layer, **{"causal": True, **kwargs})
