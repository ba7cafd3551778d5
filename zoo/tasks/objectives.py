"""The pre-training losses of the tasks as plain functions `(model, batch) -> loss`, keyed by the
`zoo.tasks` class a family trains with (`zoo.families.Family.task`): what the benchmarks time and
train outside a LightningModule. Each is the loss its task's `training_step` computes, built from the
same pieces (`masked_positions`, `seq2seq_loss`, `contrastive_loss`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.families import family_of
from zoo.tasks.contrastive import contrastive_loss
from zoo.tasks.masked_lm import masked_positions
from zoo.tasks.seq2seq_lm import seq2seq_loss

Objective = Callable[[nn.Module, dict], torch.Tensor]


def causal_lm(model: nn.Module, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy, the head fused with the loss (`CausalLM` with `fused_loss`)."""
    return model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"])


def masked_lm(model: nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy on the masked positions (`MaskedLM`)."""
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   token_type_ids=batch.get("token_type_ids"))  # (B, T, V)
    return F.cross_entropy(*masked_positions(logits.float(), batch["labels"]))


def seq2seq_lm(model: nn.Module, batch: dict) -> torch.Tensor:
    """Teacher-forced cross-entropy of the decoder (`Seq2SeqLM`)."""
    return seq2seq_loss(model, batch, batch["labels"])[0]


def contrastive(model: nn.Module, batch: dict) -> torch.Tensor:
    """Symmetric InfoNCE over the batch's image-caption pairs (`Contrastive`)."""
    out = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"))
    return contrastive_loss(out.image_embeds, out.text_embeds, out.logit_scale)


OBJECTIVES: dict[str, Objective] = {"CausalLM": causal_lm, "MaskedLM": masked_lm, "Seq2SeqLM": seq2seq_lm,
                                    "Contrastive": contrastive}


def objective_of(model: nn.Module) -> Objective:
    """The pre-training loss of `model`'s family (`Family.task` in the registry)."""
    return OBJECTIVES[family_of(model).task]


__all__ = ["OBJECTIVES", "Objective", "causal_lm", "contrastive", "masked_lm", "objective_of", "seq2seq_lm"]
