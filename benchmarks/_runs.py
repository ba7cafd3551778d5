"""Measuring training runs for `benchmarks/architectures.py`: each family's objective on one batch,
its FLOPs per step, per-step device time, tokens seen and peak memory during a Lightning fit, the
attention backends' step times, and the hardware peak that MFU is taken against.

MFU (model FLOPs utilisation, Chowdhery et al., 2022: PaLM, appendix B) = achieved FLOP/s over the
peak FLOP/s. FLOPs are counted by `torch.utils.flop_counter` (through Lightning's `measure_flops`)
on one forward + backward of the training objective, on a copy of the model with eager attention
so that every attention matmul is visible (the fused kernels are opaque to the counter); masked
(causal) scores count in full.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import gc
import inspect
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from zoo.tasks.contrastive import contrastive_loss
from zoo.tasks.masked_lm import masked_positions
from zoo.tasks.seq2seq_lm import seq2seq_loss

Objective = Callable[[nn.Module, dict], torch.Tensor]


# ---------------------------------------------------------------------------- objectives
def _causal_lm(model: nn.Module, batch: dict) -> torch.Tensor:
    if "labels" in inspect.signature(model.forward).parameters:  # head fused with the loss, as CausalLM trains
        return model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"])
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"))  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)


def _masked_lm(model: nn.Module, batch: dict) -> torch.Tensor:
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   token_type_ids=batch.get("token_type_ids"))  # (B, T, V)
    return F.cross_entropy(*masked_positions(logits.float(), batch["labels"]))


def _seq2seq(model: nn.Module, batch: dict) -> torch.Tensor:
    return seq2seq_loss(model, batch, batch["labels"])[0]


def _contrastive(model: nn.Module, batch: dict) -> torch.Tensor:
    out = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"))
    return contrastive_loss(out.image_embeds, out.text_embeds, out.logit_scale)


# The training losses of zoo.tasks (CausalLM, MaskedLM, Seq2SeqLM, Contrastive) as plain functions.
OBJECTIVES: dict[str, Objective] = {"gpt": _causal_lm, "bert": _masked_lm, "t5": _seq2seq, "bart": _seq2seq,
                                    "clip": _contrastive}


def tokens_in(family: str, model: nn.Module, batch: dict) -> int:
    """Positions the model processes for one batch: the encoder's and the decoder's (T5, BART), or
    the image patches (with the class token) and the caption tokens (CLIP). Padding included."""
    if family == "clip":
        vision = model.config.vision
        patches = (vision.image_size // vision.patch_size) ** 2 + 1
        return batch["pixel_values"].shape[0] * patches + batch["input_ids"].numel()
    n = batch["input_ids"].numel()
    return n + batch["labels"].numel() if family in ("t5", "bart") else n


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters without token/position embeddings and a tied head: the model's own count where it
    has one, else everything outside `nn.Embedding` and learned-position tables."""
    try:
        return int(model.num_parameters(non_embedding=True))
    except TypeError:
        tables = [m for m in model.modules() if isinstance(m, nn.Embedding) or type(m).__name__ == "LearnedPositions"]
        embedded = {id(p) for m in tables for p in m.parameters()}
        return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def with_attention(model: nn.Module, impl: str) -> nn.Module:
    """A fresh model of the same configuration with attention backend ``impl`` and no attention
    dropout (the Triton kernel has none, and would silently fall back to torch)."""
    config = dataclasses.replace(model.config, attn_impl=impl, attn_dropout=0.0)
    return type(model)(config)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------- FLOPs and peaks
def flops_per_step(model: nn.Module, batch: dict, objective: Objective) -> int:
    """Forward + backward FLOPs of one training step on ``batch`` (the optimizer's are negligible).

    Counted on a real device, not the meta device: the masked-LM loss gathers the masked
    positions, a data-dependent shape that meta tensors cannot compute."""
    from lightning.fabric.utilities.throughput import measure_flops

    device = batch["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave training's RNG alone
        counted = with_attention(model, "eager").to(device)
        return int(measure_flops(counted, lambda: objective(counted, batch), lambda loss: loss))


def matmul_peak(n: int = 1024, repeats: int = 7) -> float:
    """The CPU's dense fp32 matmul rate (FLOP/s) at the current torch thread count: median of
    ``repeats`` n×n×n products after one warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def peak_flops(device: torch.device) -> tuple[Optional[float], str]:
    """(peak FLOP/s, what it is) for MFU: the datasheet bf16 dense peak on a GPU (Lightning's
    table), the measured fp32 matmul rate on a CPU."""
    if device.type == "cuda":
        from lightning.fabric.utilities.throughput import get_available_flops

        peak = get_available_flops(device, torch.bfloat16)
        name = torch.cuda.get_device_name(device)
        return (float(peak), f"{name} bf16 dense datasheet peak") if peak else (None, f"{name}: peak unknown")
    return matmul_peak(), f"measured fp32 matmul peak (a 1024³ product on {torch.get_num_threads()} thread(s))"


# ---------------------------------------------------------------------------- timing
class _Clock:
    """Step timing: CUDA events on the GPU (no synchronisation inside the loop), else wall-clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end) -> float:
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def time_backends(model: nn.Module, batch: dict, objective: Objective, impls: list[str], steps: int,
                  seed: int) -> dict[str, object]:
    """Median milliseconds of one training step (forward, loss, backward, AdamW) per attention
    backend, after one warm-up step; bf16 autocast on a GPU. Triton on a CPU is recorded as n/a:
    there it runs only in Triton's interpreter, which measures nothing about the kernel."""
    device = batch["input_ids"].device
    clock, out = _Clock(device), {}
    for impl in impls:
        if impl == "triton" and device.type != "cuda":
            out[impl] = "n/a (needs CUDA)"
            continue
        out[impl] = _median_step_ms(model, batch, objective, impl, steps, seed, clock)
    return out


def _median_step_ms(model, batch, objective, impl, steps, seed, clock) -> float:
    device = batch["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = with_attention(model, impl).to(device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        times = []
        for i in range(steps + 1):
            start = clock.mark()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = objective(net, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:  # the first step warms caches, kernels and the optimizer state
                times.append(clock.seconds(start, clock.mark()))
    return round(statistics.median(times) * 1e3, 3)


def _rss_bytes() -> Optional[int]:
    """This process's resident set size now (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Hand memory freed earlier in this process back to the OS (glibc's malloc_trim), so that the
    RSS growth of a fit is that fit's own and not hidden by pages an earlier run left behind."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class StepMeter(Callback):
    """Measures a fit: each optimizer step's device time and tokens, and peak memory; logs tokens
    seen (``bench/tokens``) and seconds since the start of training (``bench/seconds``) beside the
    task's ``train/loss``, so the CSV logger's rows are the loss curves.

    Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU. A CPU has no such counter: there it
    is the growth of the resident set size over the fit, from a trimmed start, sampled before each
    backward pass (activations alive) and after each step (the C allocator keeps freed pages, so
    this approaches the high-water mark); an approximation, good to tens of percent.
    """

    def __init__(self, count_tokens: Callable[[dict], int], warmup: int = 3):
        self.count_tokens, self.warmup = count_tokens, warmup
        self.steps: list[tuple[int, object, object]] = []  # (tokens, start mark, end mark)
        self.tokens, self.peak_bytes, self.memory_kind = 0, None, ""

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock = _Clock(pl_module.device)
        if self.clock.cuda:
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        _release_free_memory()
        self.rss_start = self.rss_peak = _rss_bytes()
        self.start = time.perf_counter()

    def _sample_rss(self) -> None:
        rss = _rss_bytes()
        if rss is not None and self.rss_peak is not None:
            self.rss_peak = max(self.rss_peak, rss)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._begin = self.clock.mark()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._sample_rss()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.count_tokens(batch)
        self.steps.append((n, self._begin, self.clock.mark()))
        self._sample_rss()
        self.tokens += n
        pl_module.log("bench/tokens", float(self.tokens))
        pl_module.log("bench/seconds", time.perf_counter() - self.start)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.clock.cuda:
            self.peak_bytes, self.memory_kind = torch.cuda.max_memory_allocated(pl_module.device), "cuda max allocated"
        elif self.rss_start is not None:
            self.peak_bytes, self.memory_kind = self.rss_peak - self.rss_start, "peak RSS growth"
        self.seconds = time.perf_counter() - self.start

    def summary(self) -> dict:
        """Steps, tokens, training seconds, and the steady-state rate (the first ``warmup`` steps
        left out when there are more)."""
        timed = self.steps[self.warmup:] if len(self.steps) > self.warmup + 1 else self.steps
        times = [self.clock.seconds(start, end) for _, start, end in timed]
        tokens = sum(n for n, _, _ in timed)
        return {
            "steps": len(self.steps), "tokens": self.tokens, "train_seconds": round(self.seconds, 2),
            "median_step_ms": round(statistics.median(times) * 1e3, 2) if times else None,
            "tokens_per_s": round(tokens / sum(times), 1) if times and sum(times) > 0 else None,
            "peak_memory_mib": round(self.peak_bytes / 2**20, 1) if self.peak_bytes is not None else None,
            "memory_kind": self.memory_kind,
        }


# ---------------------------------------------------------------------------- logs
def loss_curve(log_dir: Path) -> list[dict]:
    """The training-loss rows of a run's CSVLogger ``metrics.csv``: step, tokens, seconds, loss."""
    files = sorted(Path(log_dir).rglob("metrics.csv"))
    if not files:
        return []
    curve = []
    with open(files[-1], newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss") and row.get("bench/tokens"):
                curve.append({"step": int(row["step"]), "tokens": int(float(row["bench/tokens"])),
                              "seconds": round(float(row["bench/seconds"]), 3), "loss": float(row["train/loss"])})
    return curve
