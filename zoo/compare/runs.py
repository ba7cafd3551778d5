"""Measuring training runs for `zoo compare`: tokens per batch, per-step device time, tokens seen and
peak memory during a Lightning fit, the attention backends' step times, and the loss curves.

FLOPs per step and the hardware peak that MFU (model FLOPs utilisation, Chowdhery et al., 2022:
PaLM, appendix B) is taken against come from `zoo.flops`, the accounting `zoo fit`'s `Throughput`
callback logs: counted on a meta-device copy of the model, attention scores in full.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from zoo.blocks import set_attention_impl
from zoo.families import can, family_of
from zoo.flops import task_flops
from zoo.models.base import Capability, ZooModel
from zoo.tasks.objectives import Objective


def tokens_in(model: ZooModel, batch: dict) -> int:
    """Positions the model processes for one batch: the encoder's and the decoder's (seq2seq), or
    the image patches (with the class token) and the caption tokens (image-text). Padding included."""
    if can(model, Capability.IMAGE_TEXT):
        vision = model.config.vision
        patches = (vision.image_size // vision.patch_size) ** 2 + 1
        return batch["pixel_values"].shape[0] * patches + batch["input_ids"].numel()
    n = batch["input_ids"].numel()
    return n + batch["labels"].numel() if can(model, Capability.SEQ2SEQ) else n


def step_cost(task: nn.Module, batch: dict) -> dict[str, int]:
    """FLOPs (forward + backward, `zoo.flops.task_flops`: what `Throughput` logs MFU from) and tokens
    (`tokens_in`) of one training step of `task` on a batch of this shape."""
    flops, tokens = task_flops(task, batch), tokens_in(task.model, batch)
    return {"flops_per_step": flops, "tokens_per_step": tokens, "flops_per_token": round(flops / tokens)}


def with_attention(model: ZooModel, impl: str) -> ZooModel:
    """A fresh model of the same configuration with attention backend `impl` and no attention dropout
    (the Triton kernel has none, and would silently fall back to torch)."""
    fresh = family_of(model).build(dataclasses.replace(model.config, attn_dropout=0.0))
    return set_attention_impl(fresh, impl)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


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
