"""Triton kernels for the zoo, each beside a plain-torch reference computing the same function.

Public API:

* `layer_norm(x, weight, bias=None, eps=1e-5)`: LayerNorm over the last dim (Ba et al., 2016).
* `rms_norm(x, weight, eps=1e-6)`: RMSNorm as in T5/LLaMA (Zhang & Sennrich, 2019).
* `attention(...)`: fused attention (FlashAttention-style), see `kernels.attention`.
* `relative_position_bucket(rel, bidirectional, num_buckets, max_distance)`: T5's bucket formula, the
  one implementation (re-exported by `zoo.blocks.positions`).
* `reference_layer_norm`, `reference_rms_norm`, `reference_attention`: the plain-torch versions.

The kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 (set before import);
anything else raises a RuntimeError saying so (`kernels._device.check_device`).
"""

from kernels.attention import attention, reference_attention
from kernels.layernorm import layer_norm, reference_layer_norm, reference_rms_norm, rms_norm
from kernels.t5_buckets import relative_position_bucket

__all__ = [
    "attention",
    "layer_norm",
    "reference_attention",
    "reference_layer_norm",
    "reference_rms_norm",
    "relative_position_bucket",
    "rms_norm",
]
