"""Position-wise feed-forward networks, plain and gated (GLU variants, Shazeer 2020).

Plain:  down(act(up(x)))                 — GPT-2, BERT, BART, CLIP, T5 v1.0
Gated:  down(act(gate(x)) * up(x))       — GEGLU (T5 v1.1), SwiGLU (LLaMA, Mistral)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.config import Activation


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # CLIP's sigmoid approximation of GELU


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # GPT-2's `gelu_new`, as one fused kernel (the written-out formula costs five passes over memory).
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """Feed-forward block. `gated=True` with gelu is GEGLU, with silu is SwiGLU."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: Activation = "gelu",
        gated: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.act = ACTIVATIONS[activation]
        self.activation, self.gated = activation, gated
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # p=0 dropout still copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.gate_proj is not None:
            h = self.act(self.gate_proj(x)) * self.up_proj(x)
        else:
            h = self.act(self.up_proj(x))
        return self.down_proj(self.dropout(h))
