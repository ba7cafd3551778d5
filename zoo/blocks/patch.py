"""Patch embedding for vision transformers (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words")."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbedding(nn.Module):
    """Cut an image into non-overlapping `patch_size` squares and project each to `dim` channels
    with one strided convolution: (B, C, H, W) → (B, (H/p)·(W/p), dim)."""

    def __init__(self, image_size: int, patch_size: int, dim: int, channels: int = 3, bias: bool = False):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)  # (B, dim, h, w) -> (B, h·w, dim)
