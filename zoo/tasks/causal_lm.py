"""Causal language modelling: next-token cross-entropy (Radford et al., 2018/2019)."""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from zoo.evaluation import metrics
from zoo.generation import generate
from zoo.parallel import is_sharded
from zoo.tasks.base import Schedule, Task


class LossPerplexity(MeanMetric):
    """Perplexity from the loss: exp of the token-weighted mean cross-entropy. Updated with each batch's
    mean loss and its token count, it equals `torchmetrics.text.Perplexity` on the logits, without them."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class CausalLM(Task):
    """Train a decoder to predict each next token. Logs train/val loss and perplexity, and writes a
    short sample at the end of each validation.

    Args:
        model: a decoder-only zoo model (e.g. `zoo.models.GPT`).
        optimizer: optimizer factory (default AdamW).
        schedule: "cosine", "linear" or "constant" after warm-up.
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: final learning rate as a fraction of the peak.
        sample_prompt: text the end-of-validation sample starts from ("" to skip sampling).
        sample_tokens: length of that sample in tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Schedule = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        sample_prompt: str = "The ",
        sample_tokens: int = 32,
        **kwargs,
    ):
        super().__init__(model, optimizer, schedule, warmup_steps, min_lr_ratio, **kwargs)
        self.sample_prompt, self.sample_tokens = sample_prompt, sample_tokens
        self.train_ppl = LossPerplexity()
        # A model with `forward(..., labels=)` (zoo's GPT) fuses its head with the loss: no (B, T, V) logits.
        self.fused_loss = "labels" in inspect.signature(model.forward).parameters
        self.val_ppl = metrics.perplexity()
        self.val_loss = MeanMetric()
        self.last_sample: Optional[str] = None

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"))  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)
        return loss, logits

    def _train_loss(self, batch: dict) -> torch.Tensor:
        if self.fused_loss:
            return self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"])
        return self._loss(batch)[0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._train_loss(batch)
        self.train_ppl(loss.detach(), self.count_tokens(batch["labels"]))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", self.train_ppl, prog_bar=False)
        self._log_lr()
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        n = self.count_tokens(batch["labels"])
        self.val_loss.update(loss, weight=n)
        self.val_ppl(logits.float(), batch["labels"])
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/ppl", self.val_ppl, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        self.log("test/loss", loss, batch_size=self.count_tokens(batch["labels"]))

    def on_validation_epoch_end(self) -> None:
        tok = self.tokenizer()
        if tok is None or not self.sample_prompt or self.trainer.sanity_checking:
            return
        if not self.trainer.is_global_zero and not is_sharded(self.model):
            return  # a sharded model (FSDP2, tensor parallel) needs every rank in each forward: all sample
        self.last_sample = self.sample(tok, self.sample_prompt, self.sample_tokens)
        self.log_text("sample", self.last_sample)

    def sample(self, tokenizer, prompt: str, max_new_tokens: int, temperature: float = 0.8, top_k: int = 50) -> str:
        ids = torch.tensor([tokenizer.encode(prompt).ids], device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(0)
        was_training = self.model.training
        self.model.eval()
        out = generate(self.model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, generator=gen)
        self.model.train(was_training)
        return tokenizer.decode(out[0].tolist())
