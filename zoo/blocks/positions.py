"""Position schemes.

- learned absolute positions (GPT-2, BERT; BART with an offset of 2),
- sinusoidal (Vaswani et al., 2017, "Attention Is All You Need"),
- rotary embeddings, RoPE (Su et al., 2021, "RoFormer"), in the rotate-half layout of LLaMA,
- ALiBi (Press et al., 2022, "Train Short, Test Long"),
- T5 relative position buckets (Raffel et al., 2020), with Hugging Face's bucket formula.

Absolute schemes are added to the embeddings by the model; RoPE, ALiBi and T5 act inside attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# One implementation, shared with the attention kernels' host code (blocks may import kernels).
from kernels.t5_buckets import relative_position_bucket

__all__ = ["LearnedPositions", "RotaryEmbedding", "SinusoidalPositions", "T5RelativeBias", "alibi_slopes",
           "apply_rotary", "relative_position_bucket", "t5_bias_matrix"]


class LearnedPositions(nn.Module):
    """A learned table of `num_positions` vectors. `offset` shifts indices (BART stores 2 extra rows)."""

    def __init__(self, num_positions: int, dim: int, offset: int = 0):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.zeros(num_positions + offset, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.weight[position_ids + self.offset]


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos table: even channels sin(pos·ω_i), odd channels cos(pos·ω_i), ω_i = 10000^(-2i/C)."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        table = torch.zeros(num_positions, dim, dtype=torch.float64)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.table[position_ids]


class RotaryEmbedding(nn.Module):
    """RoPE: rotates channel pairs (i, i + D/2) of q and k by angle pos·θ^(-2i/D)."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (B, 1, T, D) for positions (B, T), in fp32."""
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys; math in fp32, result in x's dtype."""
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Head slopes 2^(-8i/n) for n a power of two; otherwise interleaved from the next power (the paper's rule)."""

    def powers(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(powers(n_head))
    closest = 2 ** math.floor(math.log2(n_head))
    extra = powers(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(powers(closest) + extra)


class T5RelativeBias(nn.Module):
    """The learned per-head bias table of T5, indexed by relative position bucket.

    The table is `relative_attention_bias.weight` of shape (num_buckets, H), as in Hugging Face;
    `table()` hands attention the (H, num_buckets) layout the kernels take.
    """

    def __init__(self, n_head: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, n_head)

    def table(self) -> torch.Tensor:  # (H, num_buckets)
        return self.relative_attention_bias.weight.t()

    def matrix(self, q_len: int, k_len: int) -> torch.Tensor:
        """Materialized bias (H, Sq, Sk), queries aligned bottom-right (query i sits at i + Sk − Sq)."""
        device = self.relative_attention_bias.weight.device
        return t5_bias_matrix(self.table(), q_len, k_len, self.num_buckets, self.max_distance, self.bidirectional, device)


def t5_bias_matrix(table, q_len, k_len, num_buckets, max_distance, bidirectional, device=None) -> torch.Tensor:
    """Expand a (H, num_buckets) table to the (H, Sq, Sk) bias, bottom-right aligned."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    buckets = relative_position_bucket(k_pos - q_pos, bidirectional, num_buckets, max_distance)
    return table[:, buckets]
