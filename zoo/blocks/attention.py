"""Multi-head attention (Vaswani et al., 2017) with grouped-query heads (Ainslie et al., 2023).

One function, `attend`, computes softmax(scale·QKᵀ + bias + mask)·V with the same semantics on
three backends:

- `eager`: the textbook formula, scores materialized — for inspection and as a reference;
- `torch`: `F.scaled_dot_product_attention` (fused kernels where torch has them);
- `triton`: our FlashAttention-style kernel (`kernels.attention`), which computes ALiBi and T5
  biases in-kernel.

Masking rules shared by all three: queries are aligned bottom-right (query i sits at position
i + Sk − Sq, so a decoding step against a KV cache is causal-correct); `window` keeps keys with
|pos_i − j| ≤ window; `segment_ids` (B, Sk) mask documents packed into one sequence: query i has the
segment of key i + Sk − Sq and sees only keys of its own segment (combined with the other masks);
a query with no visible key outputs zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.backend import AttnImpl, triton_available, triton_usable, warn_once
from zoo.blocks.positions import apply_rotary, t5_bias_matrix


@dataclass
class ScoreBias:
    """Additive score biases computed from positions: ALiBi slopes (H,) or a T5 table (H, buckets)."""

    alibi_slopes: Optional[torch.Tensor] = None
    t5_table: Optional[torch.Tensor] = None
    t5_num_buckets: int = 32
    t5_max_distance: int = 128
    t5_bidirectional: bool = True


def visibility_mask(sq, sk, causal, window, key_padding_mask, device, segment_ids=None) -> Optional[torch.Tensor]:
    """Boolean (B|1, 1, Sq, Sk) mask, True = attend; None when every key is visible."""
    mask = None
    if causal or window is not None:
        q_pos = torch.arange(sk - sq, sk, device=device)[:, None]
        k_pos = torch.arange(sk, device=device)[None, :]
        mask = torch.ones(sq, sk, dtype=torch.bool, device=device)
        if causal:
            mask &= k_pos <= q_pos
        if window is not None:
            mask &= (q_pos - k_pos).abs() <= window
        mask = mask[None, None]
    if key_padding_mask is not None:
        pad = key_padding_mask[:, None, None, :].bool()
        mask = pad if mask is None else mask & pad
    if segment_ids is not None:  # (B, Sk): query i belongs to the segment of key i + Sk - Sq
        same = (segment_ids[:, sk - sq:, None] == segment_ids[:, None, :])[:, None]  # (B, 1, Sq, Sk)
        mask = same if mask is None else mask & same
    return mask


def score_bias(bias: Optional[ScoreBias], sq: int, sk: int, device) -> Optional[torch.Tensor]:
    """The additive (1, H, Sq, Sk) bias for the eager and torch backends."""
    if bias is None:
        return None
    if bias.t5_table is not None:
        b = t5_bias_matrix(bias.t5_table, sq, sk, bias.t5_num_buckets, bias.t5_max_distance, bias.t5_bidirectional, device)
        return b[None]
    if bias.alibi_slopes is not None:
        q_pos = torch.arange(sk - sq, sk, device=device)[:, None]
        k_pos = torch.arange(sk, device=device)[None, :]
        dist = (q_pos - k_pos).abs().float()
        return (-bias.alibi_slopes.float()[:, None, None] * dist)[None]
    return None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    impl: AttnImpl = "torch",
    causal: bool = False,
    scale: Optional[float] = None,
    window: Optional[int] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
    bias: Optional[ScoreBias] = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    segment_ids: Optional[torch.Tensor] = None,
):
    """Attention over q (B, H, Sq, D), k and v (B, Hkv, Sk, D); returns (B, H, Sq, D).

    With `return_weights=True` (eager only) also returns the (B, H, Sq, Sk) attention weights.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if impl == "triton" and dropout_p > 0:
        warn_once("attention impl 'triton' falls back to 'torch' while training with attention dropout: "
                  "the kernel has no dropout (set attn_dropout: 0.0 to train on the kernel)")
        impl = "torch"
    if impl == "triton" and triton_usable(q):
        import kernels

        kw = {}
        if bias is not None and bias.alibi_slopes is not None:
            kw["alibi_slopes"] = bias.alibi_slopes
        if bias is not None and bias.t5_table is not None:
            kw.update(t5_bias=bias.t5_table, t5_num_buckets=bias.t5_num_buckets,
                      t5_max_distance=bias.t5_max_distance, t5_bidirectional=bias.t5_bidirectional)
        mask = None if key_padding_mask is None else key_padding_mask.bool()
        return kernels.attention(q, k, v, causal=causal, scale=scale, window=window, key_padding_mask=mask,
                                 segment_ids=segment_ids, **kw)
    return _attend_materialized(q, k, v, impl, causal, scale, window, key_padding_mask, bias, dropout_p, return_weights,
                                segment_ids)


def _attend_materialized(q, k, v, impl, causal, scale, window, key_padding_mask, bias, dropout_p, return_weights,
                         segment_ids=None):
    """The eager and SDPA paths: build the mask and bias explicitly."""
    (B, H, Sq, D), Hkv, Sk = q.shape, k.shape[1], k.shape[2]
    if Hkv != H:  # grouped-query: each kv head serves H // Hkv query heads
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
    plain = window is None and key_padding_mask is None and bias is None and segment_ids is None and not return_weights
    if impl == "torch" and plain and (not causal or Sq == Sk):
        # No explicit mask: SDPA picks its fused (flash) kernels, on CPU too.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
    mask = visibility_mask(Sq, Sk, causal, window, key_padding_mask, q.device, segment_ids)
    add = score_bias(bias, Sq, Sk, q.device)
    has_key = None
    if mask is not None:
        has_key = mask.any(-1, keepdim=True)  # rows with no visible key output 0, not NaN
        mask = mask | ~has_key
    if impl == "eager" or return_weights:
        scores = torch.matmul(q, k.transpose(-2, -1)).float() * scale  # (B, H, Sq, Sk)
        if add is not None:
            scores = scores + add
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(q.dtype)
        weights = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
        out = torch.matmul(weights, v)
    else:
        attn_mask = add.to(q.dtype) if add is not None else None
        if mask is not None:
            neg = torch.finfo(q.dtype).min
            m = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, neg)
            attn_mask = m if attn_mask is None else attn_mask + m
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
        weights = None
    if has_key is not None:
        out = out.masked_fill(~has_key, 0.0)
    return (out, weights) if return_weights else out


class KVCache:
    """Keys and values of past positions for incremental decoding, one entry per layer.

    Self-attention entries grow along the sequence; cross-attention entries (keys and values of the
    encoder output) are computed once and reused. `beam_select` reorders the batch for beam search.
    """

    def __init__(self):
        self.self_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cross_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def seq_len(self) -> int:
        return next(iter(self.self_kv.values()))[0].shape[2] if self.self_kv else 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer in self.self_kv:
            pk, pv = self.self_kv[layer]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.self_kv[layer] = (k, v)
        return k, v

    def beam_select(self, index: torch.Tensor) -> None:
        for store in (self.self_kv, self.cross_kv):
            for layer, (k, v) in store.items():
                store[layer] = (k.index_select(0, index), v.index_select(0, index))


class ScaledDotProduct(nn.Module):
    """softmax(scale·QKᵀ + bias + mask)·V through `attend`, as a module of its own (no parameters),
    so that inspection can hook the q, k, v an attention actually used (`zoo.inspection`).

    Holds the masking options and the backend `impl`; `zoo.blocks.set_attention_impl` changes it."""

    def __init__(self, causal: bool, window: Optional[int], scale: Optional[float], dropout: float, impl: AttnImpl):
        super().__init__()
        self.causal, self.window, self.scale, self.dropout, self.impl = causal, window, scale, dropout, impl

    def forward(self, q, k, v, key_padding_mask: Optional[torch.Tensor] = None, bias: Optional[ScoreBias] = None,
                segment_ids: Optional[torch.Tensor] = None):
        drop = self.dropout if self.training else 0.0
        return attend(q, k, v, impl=self.impl, causal=self.causal, scale=self.scale, window=self.window,
                      key_padding_mask=key_padding_mask, bias=bias, dropout_p=drop, segment_ids=segment_ids)

    def extra_repr(self) -> str:
        return f"causal={self.causal}, window={self.window}, impl={self.impl}"


class Attention(nn.Module):
    """Self- or cross-attention with q/k/v/o projections and a backend switch.

    The projections are separate linear layers with Hugging Face's names, applied as they are: no
    per-call weight copies, and tensor parallel shards them by plan alone (head counts are read off
    the projected widths, so a rank holding a slice of the heads needs no other change).

    Args:
        d_model: model width. n_head: query heads. n_kv_head: key/value heads (GQA; default n_head).
        head_dim: per-head width (default d_model // n_head). bias: projection biases.
        causal, window: masking (see `attend`). scale: score scale (None → 1/√head_dim; T5 uses 1.0).
        dropout: on the attention weights, in training.
        cross: keys and values come from a `context` (encoder output) instead of x.
        context_dim: width of the context (default d_model). impl: "eager" | "torch" | "triton".
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        n_kv_head: Optional[int] = None,
        head_dim: Optional[int] = None,
        bias: bool = True,
        causal: bool = False,
        window: Optional[int] = None,
        scale: Optional[float] = None,
        dropout: float = 0.0,
        cross: bool = False,
        context_dim: Optional[int] = None,
        impl: AttnImpl = "torch",
    ):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head or n_head
        if n_head % self.n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        self.head_dim = head_dim or d_model // n_head
        self.cross = cross
        kv_in = context_dim or d_model
        self.q_proj = nn.Linear(d_model, n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_in, self.n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_in, self.n_kv_head * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_head * self.head_dim, d_model, bias=bias)
        self.core = ScaledDotProduct(causal and not cross, window, scale, dropout, impl)

    @property
    def impl(self) -> AttnImpl:
        return self.core.impl

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, n·D) -> (B, n, T, D); n from the width
        B, T, _ = x.shape
        return x.view(B, T, -1, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        bias: Optional[ScoreBias] = None,
        cache: Optional[KVCache] = None,
        layer: int = 0,
        segment_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x (B, T, C) → (B, T, C). `key_padding_mask` (B, Sk) covers the keys: past+current, or the context;
        `segment_ids` (B, T), self-attention only, keep packed documents apart (see `attend`)."""
        q = self._heads(self.q_proj(x))  # (B, H, T, D)
        if self.cross:
            k, v = self._cross_keys_values(context, cache, layer)
        else:
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))  # (B, Hkv, T, D)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.append(layer, k, v)
        out = self.core(q, k, v, key_padding_mask, bias, None if self.cross else segment_ids)  # (B, H, T, D)
        B, H, T, D = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * D))

    def _cross_keys_values(self, context, cache, layer):
        """Keys and values of the encoder output: computed once per sequence when a cache is kept."""
        if cache is not None and layer in cache.cross_kv:
            return cache.cross_kv[layer]
        k, v = self._heads(self.k_proj(context)), self._heads(self.v_proj(context))
        if cache is not None:
            cache.cross_kv[layer] = (k, v)
        return k, v


def set_attention_impl(model: nn.Module, impl: AttnImpl) -> nn.Module:
    """Choose the attention backend of every attention in a built model ("eager" | "torch" | "triton"),
    in place; returns the model. Where "triton" cannot run here, says so once (and torch runs)."""
    if impl not in ("eager", "torch", "triton"):
        raise ValueError(f"unknown attention impl {impl!r}; choose 'eager', 'torch' or 'triton'")
    if impl == "triton":
        triton_available()
    for module in model.modules():
        if isinstance(module, ScaledDotProduct):
            module.impl = impl
    return model
