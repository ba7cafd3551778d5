"""Normalization layers: LayerNorm (Ba et al., 2016) and RMSNorm (Zhang & Sennrich, 2019).

Both take `impl: "torch" | "triton"`; the Triton path is `kernels.layer_norm` / `kernels.rms_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.backend import NormImpl, triton_available, triton_usable
from zoo.blocks.config import NormKind


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension, with an optional bias (T5-style models have none)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, impl: NormImpl = "torch"):
        super().__init__()
        self.eps, self.impl = eps, impl
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "triton" and triton_usable(x):
            import kernels

            return kernels.layer_norm(x, self.weight, self.bias, self.eps)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}, impl={self.impl}"


class RMSNorm(nn.Module):
    """RMSNorm: x / sqrt(mean(x²) + eps) · weight, computed in fp32 as T5 and LLaMA do."""

    def __init__(self, dim: int, eps: float = 1e-6, impl: NormImpl = "torch"):
        super().__init__()
        self.eps, self.impl = eps, impl
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "triton" and triton_usable(x):
            import kernels

            return kernels.rms_norm(x, self.weight, self.eps)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, impl={self.impl}"


def build_norm(kind: NormKind, dim: int, eps: float, bias: bool = True, impl: NormImpl = "torch") -> nn.Module:
    """The norm named by `kind` ("layernorm" or "rmsnorm")."""
    if kind == "layernorm":
        return LayerNorm(dim, eps, bias=bias, impl=impl)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps, impl=impl)
    raise ValueError(f"unknown norm {kind!r}; choose 'layernorm' or 'rmsnorm'")


def set_norm_impl(model: nn.Module, impl: NormImpl) -> nn.Module:
    """Choose the backend of every LayerNorm/RMSNorm in a built model ("torch" | "triton"), in place."""
    if impl not in ("torch", "triton"):
        raise ValueError(f"unknown norm impl {impl!r}; choose 'torch' or 'triton'")
    if impl == "triton":
        triton_available()
    for module in model.modules():
        if isinstance(module, (LayerNorm, RMSNorm)):
            module.impl = impl
    return model
