"""Training callbacks `zoo fit` adds by default: throughput and MFU, non-finite loss handling, and the
random-number state that makes a resumed run continue exactly where it stopped.

- `Throughput`: tokens/s, samples/s and model FLOPs utilisation (MFU, Chowdhery et al. 2022, PaLM
  appendix B): the FLOPs of one training step are counted once per batch shape on a meta-device
  copy of the model and divided by the device's peak, both by `zoo.flops` (the benchmarks' accounting
  too): spec-sheet peaks on GPUs, a measured fp32 GEMM rate on CPUs.
- `NonFiniteLoss`: a NaN/Inf loss (optionally gradient) either stops training with one line naming
  the step and the likely causes, or skips that optimizer step. All ranks agree before acting.
- `RNGState`: Lightning checkpoints weights, optimizer, schedulers, loop progress and (through
  `zoo.data.sampling`) the data position, but not the random state, so dropout after a resume would
  differ. This callback checkpoints the Python, NumPy, torch CPU and CUDA generators of every rank.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from zoo.errors import ZooError
from zoo.flops import measured_matmul_peak, peak_flops, task_flops, training_flops  # one FLOP accounting (re-exported)
from zoo.models.base import Seq2SeqModel


# --------------------------------------------------------------------------- token counts
def batch_counts(batch: dict, encoder_decoder: bool) -> tuple[torch.Tensor, int]:
    """(real tokens, samples) of a batch: attention-mask ones (else labels != -100, else every id);
    an encoder-decoder adds its decoder's labels != -100. Samples: rows of images or token ids."""
    ids, mask, labels = batch.get("input_ids"), batch.get("attention_mask"), batch.get("labels")
    if mask is not None:
        tokens = mask.sum()
    elif labels is not None and labels.dim() > 1:
        tokens = (labels != -100).sum()
    else:
        tokens = torch.tensor(ids.numel() if ids is not None else 0)
    if encoder_decoder and labels is not None:
        tokens = tokens + (labels != -100).sum()
    rows = batch["pixel_values"] if "pixel_values" in batch else ids
    return tokens, (rows.shape[0] if rows is not None else 0)


# --------------------------------------------------------------------------- callbacks
class Throughput(L.Callback):
    """Logs `perf/tokens_per_s`, `perf/samples_per_s`, `perf/tflops_per_s` and `perf/mfu` every step,
    averaged over the last `window` batches (validation time excluded); tokens/s and MFU also
    show in the progress bar.

    Rates are for the whole run: this rank's rate times the data-parallel size (ranks see batches
    of the same shape). `perf/tflops_per_s` and `perf/mfu` are per device: a tensor-parallel group
    shares one batch's FLOPs. Each micro-batch of gradient accumulation counts as one batch.

    Args:
        peak_flops: peak FLOP/s of one device for MFU. Default: Lightning's spec-sheet table on
            GPUs (for the trainer's precision), a measured fp32 GEMM rate on CPUs.
        window: batches averaged.
    """

    def __init__(self, peak_flops: Optional[float] = None, window: int = 20):
        self.peak = peak_flops
        self.window = window
        self._flops: dict[tuple, Optional[int]] = {}
        self._recent: deque = deque(maxlen=window)
        self._last: Optional[float] = None
        self._batch: tuple = (0, torch.tensor(0), 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        source = "given"
        if self.peak is None:
            self.peak, source = peak_flops(pl_module.device, trainer.precision)
        if self.peak:
            rank_zero_info(f"MFU against {source}: {self.peak / 1e12:.3g} TFLOP/s per device")
        else:
            rank_zero_warn("no peak FLOP/s known for this device; set Throughput(peak_flops=...) to log MFU")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._last is None:
            self._last = time.perf_counter()
        if not isinstance(batch, dict):
            self._batch = (None, torch.tensor(0), 0)
            return
        model = getattr(pl_module, "model", pl_module)
        shape = tuple((k, tuple(v.shape)) for k, v in sorted(batch.items()) if torch.is_tensor(v))
        if shape not in self._flops:
            self._flops[shape] = self._measure(pl_module, batch)
        tokens, samples = batch_counts(batch, isinstance(model, Seq2SeqModel))
        self._batch = (self._flops[shape], tokens, samples)

    @staticmethod
    def _measure(task: nn.Module, batch: dict) -> Optional[int]:
        try:
            return task_flops(task, batch)
        except Exception as err:  # a model without a config, an op meta tensors lack: no MFU, rest still works
            rank_zero_warn(f"could not count training FLOPs on the meta device ({type(err).__name__}: {err}); "
                           "perf/mfu will not be logged")
            return None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # kernels run asynchronously: time what finished
        now = time.perf_counter()
        flops, tokens, samples = self._batch
        self._recent.append((now - (self._last or now), int(tokens), samples, flops))
        self._last = now
        seconds = sum(r[0] for r in self._recent)
        if seconds <= 0:
            return
        dp = (trainer.distributed_sampler_kwargs or {}).get("num_replicas", 1)
        metrics = {"perf/tokens_per_s": dp * sum(r[1] for r in self._recent) / seconds,
                   "perf/samples_per_s": dp * sum(r[2] for r in self._recent) / seconds}
        if all(r[3] is not None for r in self._recent):
            device_flops = sum(r[3] for r in self._recent) / seconds * dp / trainer.world_size
            metrics["perf/tflops_per_s"] = device_flops / 1e12
            if self.peak:
                metrics["perf/mfu"] = device_flops / self.peak
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, batch_size=1,
                          prog_bar=name in ("perf/tokens_per_s", "perf/mfu"))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None  # the next batch's time starts when it does, not when validation began

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None


class NonFiniteLoss(L.Callback):
    """Detects a NaN/Inf training loss (and, optionally, gradients) before the optimizer step.

    Default `action="stop"`: a non-finite loss almost always has a cause that does not go away
    (a learning rate too high, fp16 overflow, a broken batch), and every later step is wasted, so
    training ends with one line naming the step. `"skip"` suits long runs with rare spikes: that
    optimizer step is dropped — gradients cleared, weights and optimizer moments untouched —
    while the step counter and learning-rate schedule advance as if it ran, so the run still ends
    at `max_steps` on its planned schedule. More than `max_skips` steps skipped in a row stop
    training anyway (the model has diverged). Ranks all-reduce the flag, so under DDP all skip or
    all stop together.

    Args:
        action: "stop" (raise) or "skip" (drop the optimizer step).
        check_grads: also treat a non-finite gradient as a bad step (one pass over the gradients
            per step; ignored with 16-mixed precision, whose gradient scaler already skips those).
        max_skips: consecutive skipped steps after which "skip" stops too.
    """

    def __init__(self, action: Literal["skip", "stop"] = "stop", check_grads: bool = False, max_skips: int = 10):
        if action not in ("skip", "stop"):
            raise ZooError(f"NonFiniteLoss action={action!r}; use 'skip' or 'stop'")
        self.action, self.check_grads, self.max_skips = action, check_grads, max_skips
        self.skipped_steps, self._in_row = 0, 0
        self._bad: Optional[torch.Tensor] = None
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()  # a tensor: no device sync per micro-batch
        self._bad = bad if self._bad is None else self._bad | bad

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        what = "loss" if self._bad is not None and bool(self._bad) else None
        self._bad = None
        if what is None and self.check_grads and str(trainer.precision) != "16-mixed" and not _grads_finite(optimizer):
            what = "gradient"
        if not trainer.strategy.reduce_boolean_decision(what is not None, all=False):
            self._in_row = 0
            return
        what = what or "loss or gradient (on another rank)"
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        if self.action == "stop" or self._in_row >= self.max_skips:
            ahead = f"after {self._in_row} skipped steps in a row, " if self._in_row else ""
            raise ZooError(
                f"non-finite {what} at {where}, {ahead}training stopped; likely causes: a learning rate too high "
                "(lower the optimizer's lr or lengthen warmup_steps), fp16 overflow (use --trainer.precision "
                "bf16-mixed or a lower lr), or bad data in that batch; to skip such steps instead, add the callback "
                "zoo.callbacks.NonFiniteLoss with action: skip"
            )
        for group in optimizer.param_groups:  # no gradient: the optimizer leaves the weights and its moments
            for p in group["params"]:
                p.grad = None
        self._in_row += 1
        self.skipped_steps += 1
        rank_zero_warn(f"non-finite {what} at {where}: optimizer step skipped ({self.skipped_steps} so far)")

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "in_row": self._in_row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps, self._in_row = int(state["skipped_steps"]), int(state["in_row"])


def _grads_finite(optimizer: Any) -> bool:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # DTensor shards: check this rank's
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class RNGState(L.Callback):
    """Keeps the random state of training a function of the training batches alone, and checkpoints it.

    The Python, NumPy, torch CPU and (current) CUDA generators are captured at the end of every
    training batch. Validation, which may draw from them, gets them restored when it ends, so it
    does not shift what training draws next (dropout, any sampling while loading the next batch).
    The checkpoint of batch k holds that capture for every rank; a resumed run restores it when
    training starts and again at its first batch (Lightning's restart bookkeeping may draw in
    between): batch k+1 draws the same numbers as in a run that never stopped.
    """

    def __init__(self) -> None:
        self._state: Optional[dict] = None
        self._loaded = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded and self._state is not None:
            set_rng_state(self._state)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._loaded and self._state is not None:
            set_rng_state(self._state)
        self._loaded = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._state = rng_state(pl_module.device)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is not None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            set_rng_state(self._state)

    def state_dict(self) -> dict[str, Any]:
        mine = self._state
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, mine)  # every rank dumps the checkpoint; rank 0 writes it
            return {"ranks": ranks}
        return {"ranks": [mine]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state["ranks"]
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        if len(ranks) != world:
            rank_zero_warn(f"the checkpoint holds the random state of {len(ranks)} ranks; this run has a different "
                           "number, so dropout will not repeat the original run exactly")
        self._state, self._loaded = ranks[rank % len(ranks)], True


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA (of `device`) generator states, in types `weights_only` loads."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], torch.cuda.current_device())


def default_callbacks() -> list[L.Callback]:
    """What `zoo fit` adds unless the config already lists a callback of the same class."""
    return [Throughput(), NonFiniteLoss(), RNGState()]


__all__ = ["NonFiniteLoss", "RNGState", "Throughput", "batch_counts", "default_callbacks", "measured_matmul_peak",
           "training_flops"]
