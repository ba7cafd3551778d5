"""FLOP and peak accounting for MFU (model FLOPs utilisation, Chowdhery et al., 2022: PaLM, appendix B),
in one place: the `Throughput` callback of `zoo fit` and the architecture benchmarks both read it.

- `training_flops`: the FLOPs of one forward + backward, counted with
  `torch.utils.flop_counter.FlopCounterMode` on a meta-device copy of the model (no memory, no compute).
- `peak_flops`: the device's peak FLOP/s. GPUs: Lightning's table of spec-sheet peaks for the
  precision in use. CPUs have no spec sheet: the peak is *measured*, a timed fp32 GEMM with the torch
  thread count in use (`measured_matmul_peak`).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from functools import lru_cache
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from zoo.blocks import set_attention_impl, set_norm_impl


def _plain_class(model: nn.Module) -> type:
    """The model's own class: FSDP2 wraps it in a generated `FSDP<Name>` subclass."""
    return next(c for c in type(model).__mro__ if not c.__name__.startswith("FSDP"))


def _scalar(out: Any) -> torch.Tensor:
    """A scalar whose backward reaches every output (a tensor, or the tensors of a model-output dataclass)."""
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    values = [getattr(out, f.name) for f in dataclasses.fields(out)] if dataclasses.is_dataclass(out) else list(out)
    return sum(v.float().sum() for v in values if isinstance(v, torch.Tensor) and v.requires_grad)


def _meta_inputs(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Meta tensors for the forward arguments the batch provides; an encoder-decoder's decoder reads
    inputs shaped like its target sequence (teacher forcing): `target_ids` in text-to-text
    classification, where `labels` are class indices (B,), otherwise token `labels` (B, T). Labels
    are withheld: a fused loss picks rows by their values, which meta tensors do not have; the
    logits cost the same matmuls."""
    params = inspect.signature(model.forward).parameters
    inputs = {k: torch.empty_like(v, device="meta") for k, v in batch.items()
              if k in params and k != "labels" and torch.is_tensor(v)}
    if "decoder_input_ids" in params and "decoder_input_ids" not in inputs:
        target = next((batch[k] for k in ("target_ids", "labels")
                       if torch.is_tensor(batch.get(k)) and batch[k].dim() == 2), None)
        if target is not None:
            inputs["decoder_input_ids"] = torch.empty_like(target, device="meta")
    return inputs


def training_flops(model: nn.Module, batch: dict, forward: Optional[Callable] = None) -> int:
    """FLOPs of one forward + backward of `model` on a batch of this shape, counted on the meta device.

    The copy is built from the model's config, so nothing is allocated or computed. Matrix products
    and attention are counted (what MFU counts); the loss and elementwise work are not. Attention
    is counted in full (T² per head), also where a causal kernel skips half: PaLM's convention.
    `forward(meta_model, meta_inputs)` is what the task runs, where that is not `model(**inputs)`
    (a classifier reads pooled features and never computes the language-model head).
    """
    with torch.device("meta"):
        meta = _plain_class(model)(model.config)
    set_attention_impl(meta, "torch")  # kernels cannot run on meta tensors; torch computes the same function
    set_norm_impl(meta, "torch")
    meta.train()
    counter = FlopCounterMode(display=False)
    with counter:
        inputs = _meta_inputs(meta, batch)
        _scalar(forward(meta, inputs) if forward else meta(**inputs)).backward()
    return int(counter.get_total_flops())


def task_flops(task: nn.Module, batch: dict) -> int:
    """`training_flops` of what a task trains on `batch`: its `model`, through the task's own
    `flop_forward` where it has one (a classifier). What `Throughput` logs and the benchmarks record."""
    return training_flops(getattr(task, "model", task), batch, getattr(task, "flop_forward", None))


@lru_cache(maxsize=None)
def measured_matmul_peak(threads: int, n: int = 1024, repeats: int = 3) -> float:
    """FLOP/s of a dense fp32 n×n GEMM on this CPU with `threads` torch threads: the best of `repeats`.

    The CPU stand-in for a spec-sheet peak (so CPU MFU reads "against measured matmul peak"). A
    private generator keeps the global random state untouched.
    """
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best


def precision_dtype(precision: Any) -> torch.dtype:
    """The matmul dtype of a Lightning precision setting ("bf16-mixed" → bfloat16, ...)."""
    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16"):
        return torch.float16
    return torch.float64 if p.startswith("64") else torch.float32


def peak_flops(device: torch.device, precision: Any) -> tuple[Optional[float], str]:
    """(peak FLOP/s of one device, where it came from); None when unknown."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return measured_matmul_peak(threads), f"measured fp32 matmul peak ({threads} thread(s))"
    from lightning.fabric.utilities.throughput import get_available_flops

    flops = get_available_flops(device, precision_dtype(precision))
    return (float(flops) if flops else None), f"spec-sheet peak for {precision_dtype(precision)}"


__all__ = ["measured_matmul_peak", "peak_flops", "precision_dtype", "task_flops", "training_flops"]
