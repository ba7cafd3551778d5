"""The transformer block and stacks (Vaswani et al., 2017), pre-norm (GPT-2, T5, LLaMA, CLIP) or
post-norm (BERT, BART), with optional cross-attention for encoder-decoder models.

A stack owns the position schemes that act inside attention (RoPE, ALiBi, T5 relative bias) and
hands each block what it needs, so every family is configuration over the same code.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from zoo.blocks.attention import Attention, KVCache, ScoreBias
from zoo.blocks.config import BlockConfig, StackConfig
from zoo.blocks.mlp import MLP
from zoo.blocks.norms import build_norm
from zoo.blocks.positions import RotaryEmbedding, T5RelativeBias, alibi_slopes


def _attention(c: BlockConfig, cross: bool) -> Attention:
    a = c.attention
    return Attention(c.d_model, a.n_head, n_kv_head=a.n_kv_head, head_dim=a.head_dim, bias=a.bias,
                     causal=c.causal and not cross, window=None if cross else a.window, scale=a.scale,
                     dropout=a.dropout, cross=cross, impl=a.impl)


def _norm(c: BlockConfig) -> nn.Module:
    return build_norm(c.norm.kind, c.d_model, c.norm.eps, c.norm.bias, c.norm.impl)


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention, and an MLP, each a residual branch.

    Pre-norm:  x = x + f(norm(x)).   Post-norm:  x = norm(x + f(x)).

    Args:
        config: the block (`zoo.blocks.BlockConfig`: attention, MLP and norm sub-configs).
    """

    def __init__(self, config: BlockConfig):
        super().__init__()
        c, m = config, config.mlp
        self.config, self.prenorm = c, c.prenorm
        self.self_attn = _attention(c, cross=False)
        self.self_attn_norm = _norm(c)
        self.cross_attn = _attention(c, cross=True) if c.cross_attention else None
        self.cross_attn_norm = _norm(c) if c.cross_attention else None
        self.mlp = MLP(c.d_model, m.d_ff, m.activation, m.gated, m.bias, m.dropout)
        self.mlp_norm = _norm(c)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()

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
        segment_ids: Optional[torch.Tensor] = None,  # (B, T): packed documents, attended separately
    ) -> torch.Tensor:
        x = self._residual(x, self.self_attn_norm,
                           lambda h: self.self_attn(h, key_padding_mask, rope=rope, bias=self_bias, cache=cache,
                                                    layer=layer, segment_ids=segment_ids))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_attn_norm,
                               lambda h: self.cross_attn(h, context_mask, context=context, bias=cross_bias, cache=cache, layer=layer))
        return self._residual(x, self.mlp_norm, self.mlp)


class TransformerStack(nn.Module):
    """`n_layer` blocks plus the position scheme acting inside attention and an optional final norm.

    Relative positions ("rope", "alibi", "t5") live in the stack: T5's bias table is shared by all
    layers, as T5 computes it in the first layer and reuses it.

    Args:
        config: the stack (`zoo.blocks.StackConfig`), whose `block` builds every layer.
    """

    def __init__(self, config: StackConfig):
        super().__init__()
        self.config, b = config, config.block
        self.layers = nn.ModuleList(TransformerBlock(b) for _ in range(config.n_layer))
        self.causal = b.causal
        self.relative_position = config.relative_position
        self.rope = RotaryEmbedding(b.head_dim, config.rope_theta) if config.relative_position == "rope" else None
        if config.relative_position == "alibi":
            self.register_buffer("alibi", alibi_slopes(b.attention.n_head), persistent=False)
        self.relative_bias = (
            T5RelativeBias(b.attention.n_head, config.t5_num_buckets, config.t5_max_distance, bidirectional=not b.causal)
            if config.relative_position == "t5" else None
        )
        self.norm = _norm(b) if config.final_norm else None

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
        segment_ids: Optional[torch.Tensor] = None,  # (B, T): document of each token in a packed sequence
    ) -> torch.Tensor:
        rope = None
        if self.rope is not None:
            if position_ids is None:
                past = cache.seq_len if cache is not None else 0
                position_ids = torch.arange(past, past + x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
            rope = self.rope(position_ids)
        bias = self.self_bias()
        for i, layer in enumerate(self.layers):
            x = layer(x, key_padding_mask, context, context_mask, rope, bias, None, cache, i, segment_ids)
        return self.norm(x) if self.norm is not None else x


class EncoderStack(TransformerStack):
    """A bidirectional stack (BERT, the T5/BART encoders, CLIP's vision tower)."""

    def __init__(self, config: StackConfig):
        super().__init__(replace(config, block=replace(config.block, causal=False, cross_attention=False)))


class DecoderStack(TransformerStack):
    """A causal stack; with `block.cross_attention`, the decoder of an encoder-decoder model."""

    def __init__(self, config: StackConfig):
        super().__init__(replace(config, block=replace(config.block, causal=True)))
