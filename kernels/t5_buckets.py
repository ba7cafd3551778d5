"""T5 relative position buckets (Raffel et al., 2020): the one implementation of Hugging Face's formula.

Used by the attention kernels' host code (the bucket table they look up) and re-exported by
`zoo.blocks.positions` for the blocks, so the two can never disagree.
"""

from __future__ import annotations

import functools
import math

import torch


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of relative_position = key_pos − query_pos, exactly Hugging Face's formula.

    Small distances get a bucket each; larger ones share log-spaced buckets up to max_distance and
    the last bucket beyond. The float32 log and the truncation by `.to(torch.long)` are kept as
    they are, since a bucket that moves by one at an exact boundary changes the model.
    """
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    log_ratio = torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


@functools.lru_cache(maxsize=64)
def t5_bucket_table(device: torch.device, num_buckets: int, max_distance: int, bidirectional: bool):
    """Buckets of r = -L..L with L = max(max_distance, num_buckets), and L.

    Beyond ±L the bucket no longer changes (it is saturated past max_distance), so the kernels
    clamp r into the table. The table comes from the torch formula on the tensors' own device,
    so the kernels reproduce that device's float32 log rounding bit for bit. Computing the log in
    the kernel (Triton's approximate log and division) risks moving the distances where the exact
    value is an integer, e.g. r = 64 for the default 32/128, into the neighbouring bucket.
    """
    L = max(max_distance, num_buckets)
    rel = torch.arange(-L, L + 1, device=device)
    return relative_position_bucket(rel, bidirectional, num_buckets, max_distance).to(torch.int32), L
