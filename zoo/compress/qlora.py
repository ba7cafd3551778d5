"""QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"): LoRA adapters in full
precision over a frozen, quantized base — the order DESIGN.md fixes, quantize → LoRA.

- "int8-weight" (CPU or CUDA): torchao int8 weight-only base (`zoo.compress.quantize`); gradients flow
  to the activations through torchao's int8 linear, the base never changes.
- "nf4" (CUDA): bitsandbytes `Linear4bit` (4-bit NormalFloat, double quantization), QLoRA's own base.

The adapters are ordinary `zoo.adapters.LoRALinear` layers; `zoo.adapters.save_peft` writes them in
PEFT's format as for any LoRA model. (Merging into a quantized base is refused by `merge_lora`: load
the float base, then merge.)
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from zoo.errors import ZooError

QLoRAScheme = str  # "int8-weight" | "nf4"


def nf4_quantize(model: nn.Module, compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Replace the stack linears by bitsandbytes NF4 `Linear4bit` layers (CUDA), in place."""
    from zoo.compress.quantize import quantizable_linears

    if not torch.cuda.is_available():
        raise ZooError("NF4 (bitsandbytes) needs a CUDA GPU; on the CPU use QLoRA's int8-weight base")
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ZooError(f"NF4 needs bitsandbytes ({err}); pip install bitsandbytes (CUDA only)") from None
    for name, linear in quantizable_linears(model).items():
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True)
        q.weight = bnb.nn.Params4bit(linear.weight.data.cpu(), requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.data.cpu(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, q.cuda())  # moving to CUDA quantizes
    return model


def quantize_base(model: nn.Module, scheme: QLoRAScheme) -> nn.Module:
    """QLoRA's base: `model`'s stack linears quantized in place (int8-weight: torchao; nf4: bitsandbytes)."""
    from zoo.compress.quantize import quantize

    if scheme == "nf4":
        return nf4_quantize(model)
    if scheme == "int8-weight":
        return quantize(model, "int8-weight")
    raise ZooError(f"QLoRA base {scheme!r}: choose int8-weight (CPU, CUDA) or nf4 (CUDA, bitsandbytes)")


def qlora(model: nn.Module, scheme: QLoRAScheme = "int8-weight", r: int = 8, alpha: float = 16.0,
          dropout: float = 0.0, targets: Union[str, Sequence[str]] = "all-linear",
          generator: Optional[torch.Generator] = None) -> nn.Module:
    """Quantize `model`'s base (frozen) and add full-precision LoRA adapters (the only trainable weights)."""
    from zoo.adapters import add_lora

    quantize_base(model, scheme)
    return add_lora(model, r=r, alpha=alpha, dropout=dropout, targets=targets, generator=generator)
