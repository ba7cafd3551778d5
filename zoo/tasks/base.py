"""The base task: a LightningModule wrapping an injected model, with the optimizer and learning-rate
schedule injected from the config.

Parameter groups follow common practice (nanoGPT, Hugging Face): matrices (linear and embedding
weights) get weight decay; biases, norm gains and other vectors do not. The schedule is a linear
warm-up followed by cosine (or linear) decay to `min_lr_ratio`·lr, stepped every optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import Metric

from zoo.adapters.lora import LoRAConfig
from zoo.families import family_of

Schedule = Literal["cosine", "linear", "constant"]


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: Schedule, min_lr_ratio: float) -> float:
    """Factor applied to the base learning rate at optimizer step `step`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def parameter_groups(model: nn.Module) -> list[dict]:
    """Two groups: decayed matrices, and non-decayed vectors (weight_decay=0 overrides the optimizer's)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def reset_metrics(module: nn.Module) -> None:
    """Give every torchmetrics state a fresh, ordinary tensor.

    A `trainer.validate` creates metric states under `torch.inference_mode`; the validation inside
    a later `trainer.fit` runs without it and may not update such tensors in place. Called from
    `Task.on_fit_start`, this lets one task be validated, fitted and validated again (as benchmarks do).
    """
    for metric in module.modules():
        if isinstance(metric, Metric):
            metric.reset()


class Task(L.LightningModule):
    """Shared training plumbing. Subclasses define the objective in `training_step`/`validation_step`.

    Args:
        model: the network (a zoo model, chosen in YAML by class_path).
        optimizer: optimizer factory called with the parameter groups (default AdamW; set lr,
            betas and weight_decay in its init_args).
        schedule: learning-rate decay after warm-up: "cosine", "linear" or "constant".
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: final learning rate as a fraction of the peak.
        compile: compile each transformer block with `torch.compile` (in place) before training.
        activation_checkpointing: recompute each block's activations in the backward pass instead
            of storing them: less memory, about one more forward pass of compute.
        lora: train LoRA adapters instead of the whole model (`zoo.adapters.LoRAConfig`: r, alpha,
            dropout, targets, trainable, save_adapters_only, base); applied before parallelism.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Schedule = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        compile: bool = False,
        activation_checkpointing: bool = False,
        lora: Optional[LoRAConfig] = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.schedule, self.warmup_steps, self.min_lr_ratio = schedule, warmup_steps, min_lr_ratio
        self.compile_blocks, self.activation_checkpointing = compile, activation_checkpointing
        self.lora = lora
        if lora is not None and lora.save_adapters_only:
            self.strict_loading = False  # resuming: the frozen base comes from the base checkpoint, not this file
        self.save_hyperparameters(ignore=["model", "optimizer", "lora"])  # lora: in checkpoint["zoo"], as a dict

    def configure_model(self) -> None:
        """Parallelism from outside the model (`zoo.parallel`): tensor parallel, activation checkpointing,
        compile and FSDP2, as the options and the mesh of `ModelParallelStrategy` (if any) ask."""
        from zoo.parallel import parallelize

        if self.lora is not None:  # the documented order: quantize → LoRA → tensor parallel → ... → FSDP2
            from zoo.adapters.tasks import apply_to_task

            apply_to_task(self, self.lora)
        parallelize(self.model, self.device_mesh, self.compile_blocks, self.activation_checkpointing)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # torch's norm clipping cannot combine DTensor gradients on different meshes (FSDP2 × tensor parallel)
        from zoo.parallel import clip_grad_norm_, is_sharded

        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and is_sharded(self.model):
            clip_grad_norm_(self.parameters(), gradient_clip_val)  # the model's and any head's: DTensors on 1-D and 2-D meshes
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(parameter_groups(self))  # the model's, and any head the task adds
        total = max(1, int(self.trainer.estimated_stepping_batches))
        fn = lambda step: lr_multiplier(step, self.warmup_steps, total, self.schedule, self.min_lr_ratio)  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints carry what `zoo generate` needs to rebuild the model without the YAML ---
    def tokenizer(self):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(dm, "tokenizer", None)

    def on_fit_start(self) -> None:
        reset_metrics(self)
        # The tokenizer travels with the run, next to the checkpoints and logs.
        tok = self.tokenizer()
        # `trainer.log_dir` broadcasts from rank 0, so every rank must read it (reading it on rank 0
        # only hangs DDP). Only with a logger: without one it falls back to the working directory.
        log_dir = self.trainer.log_dir if self.trainer.logger is not None else None
        if tok is not None and log_dir and self.trainer.is_global_zero:
            from pathlib import Path

            path = Path(log_dir) / "tokenizer.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tok.save(str(path))
            self.tokenizer_file = str(path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        tok = self.tokenizer()
        checkpoint["zoo"] = {
            "family": family_of(self.model).name,
            "config": asdict(self.model.config),
            "tokenizer": tok.to_str() if tok is not None else None,
        }
        if self.lora is not None:
            from zoo.adapters.tasks import checkpoint_meta, trainable_state

            checkpoint["zoo"]["lora"] = checkpoint_meta(self.lora, getattr(self, "init_from", None))
            if self.lora.save_adapters_only:
                checkpoint["state_dict"] = trainable_state(self, checkpoint["state_dict"])

    def log_text(self, key: str, text: str) -> None:
        """Send text to loggers that take it (TensorBoard); always printed on rank zero."""
        for logger in self.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_text"):
                exp.add_text(key, text, self.global_step)
        self.print(f"[{key} @ step {self.global_step}] {text!r}")

    def _log_lr(self) -> None:
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=False)

    @staticmethod
    def count_tokens(labels: torch.Tensor, ignore_index: int = -100) -> int:
        return int((labels != ignore_index).sum())

    def forward(self, *args, **kwargs) -> Optional[torch.Tensor]:
        return self.model(*args, **kwargs)
