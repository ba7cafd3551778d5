"""Masked language modelling: cross-entropy on the chosen (masked) positions only (BERT; Devlin et
al., 2019). The masking itself happens in the data (``zoo.data.MaskedLMDataModule``), fresh every
epoch as in RoBERTa; this task scores the predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from zoo.errors import ZooError
from zoo.evaluation import metrics
from zoo.tasks.base import Schedule, Task

IGNORE_INDEX = -100


def masked_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (N, V) and labels (N,) of the N positions whose label is not -100."""
    chosen = labels != IGNORE_INDEX
    return logits[chosen], labels[chosen]


class MaskedLM(Task):
    """Train an encoder to recover masked tokens. Logs loss, masked-token accuracy and perplexity
    (over the masked positions) for train and val.

    Args:
        model: an encoder with an MLM head, `model(input_ids, attention_mask, token_type_ids)` →
            logits (B, T, V) (e.g. `zoo.models.Bert`).
        optimizer: optimizer factory (default AdamW).
        schedule: "cosine", "linear" or "constant" after warm-up.
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Schedule = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        **kwargs,
    ):
        super().__init__(model, optimizer, schedule, warmup_steps, min_lr_ratio, **kwargs)
        vocab = model.config.vocab_size
        self.train_acc, self.val_acc = metrics.accuracy(vocab), metrics.accuracy(vocab)
        self.train_ppl, self.val_ppl = metrics.perplexity(), metrics.perplexity()
        self.val_loss = MeanMetric()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        pad = getattr(dm, "pad_token_id", None) if dm is not None else None
        mine = getattr(self.model.config, "pad_token_id", None)
        if pad is not None and mine is not None and pad != mine:
            raise ZooError(
                f"the tokenizer's padding id is {pad} but the model's config says pad_token_id={mine}; "
                f"set --model.init_args.model.init_args.config.pad_token_id {pad}"
            )

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                            token_type_ids=batch.get("token_type_ids"))  # (B, T, V)
        chosen_logits, chosen_labels = masked_positions(logits.float(), batch["labels"])
        loss = F.cross_entropy(chosen_logits, chosen_labels)  # (N, V) vs (N,): the masked positions
        return loss, chosen_logits, chosen_labels

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._step(batch)
        logits = logits.detach()
        self.train_acc(logits.argmax(-1), labels)
        self.train_ppl(logits[None], labels[None])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc)
        self.log("train/ppl", self.train_ppl)
        self._log_lr()
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_loss.update(loss, weight=len(labels))  # a mean over masked tokens, not over batches
        self.val_acc(logits.argmax(-1), labels)
        self.val_ppl(logits[None], labels[None])
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/ppl", self.val_ppl)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.log("test/loss", loss, batch_size=len(labels))
