"""Knowledge distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"; the
DistilBERT recipe of Sanh et al., 2019): a student learns from a frozen teacher of the same family.

    loss = α · T² · KL(p_teacher,T ‖ p_student,T) + (1 − α) · CE(student, labels) [+ β · (1 − cos(h_s, h_t))]

averaged over the positions that carry a label (next tokens for GPT, masked tokens for BERT, target
tokens for T5/BART). The T² keeps the gradient scale of the soft term independent of T.

Neither model's (tokens × vocabulary) logits are held in full, as in `zoo.blocks.loss`: rows (tokens
for GPT and BERT, whose heads read hidden states; sequences for T5/BART, whose typed interface
`decode` returns logits) are processed in chunks; the student's chunk runs under activation
checkpointing, so its (chunk × V) logits are recomputed in backward rather than kept.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchmetrics import MeanMetric

from zoo.errors import ZooError
from zoo.models.base import CausalLMModel, MaskedLMModel, Seq2SeqModel
from zoo.tasks.base import Schedule, Task
from zoo.tasks.causal_lm import LossPerplexity

IGNORE = -100
RowLogits = Callable[[torch.Tensor], torch.Tensor]  # row indices (c,) -> logits (c, ..., V)


def _chunk_terms(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, temperature: float):
    """Summed KL(p_t ‖ p_s) at `temperature` and summed CE of the student, over rows with a label."""
    valid = labels != IGNORE
    s, t, labels = s.float()[valid], t.float()[valid], labels[valid]
    log_ps, log_pt = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    ce = F.cross_entropy(s, labels, reduction="sum")
    return torch.stack([kl, ce])


def chunked_distillation_terms(student_rows: RowLogits, teacher_rows: RowLogits, labels: torch.Tensor,
                               temperature: float, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean KL, mean CE) over the labelled positions, `chunk_size` rows at a time. `labels` is (R, ...):
    row r's logits `student_rows(idx)[i]` have labels `labels[idx[i]]`."""
    total = torch.zeros(2, device=labels.device)
    for start in range(0, labels.shape[0], chunk_size):
        idx = torch.arange(start, min(start + chunk_size, labels.shape[0]), device=labels.device)
        if not bool((labels[idx] != IGNORE).any()):
            continue
        with torch.no_grad():
            t = teacher_rows(idx)
        fn = lambda i, t_: _chunk_terms(student_rows(i), t_, labels[i], temperature)  # noqa: E731
        total = total + (checkpoint(fn, idx, t, use_reentrant=False) if torch.is_grad_enabled() else fn(idx, t))
    n = (labels != IGNORE).sum().clamp(min=1)
    return total[0] / n, total[1] / n


def distillation_loss_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                                alpha: float, temperature: float) -> torch.Tensor:
    """The unchunked formula, holding all logits: what the chunked loss must equal."""
    valid = labels != IGNORE
    s, t = student_logits[valid].float(), teacher_logits[valid].float()
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, labels[valid])


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """The teacher layer each student layer starts from: every other one for half depth (0, 2, 4, ...),
    evenly spread otherwise."""
    return [min(n_teacher - 1, round(i * n_teacher / n_student)) for i in range(n_student)]


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> int:
    """Copy the teacher's weights into the student: same-named tensors of equal shape, and student layer i
    of each stack from teacher layer `layer_map(...)[i]` (DistilBERT). Returns the tensors copied."""
    from zoo.compress.prune import stacks

    t_state, s_state = teacher.state_dict(), student.state_dict()
    maps = {name: layer_map(len(s.layers), len(stacks(teacher)[name].layers)) for name, s in stacks(student).items()}
    copied = {}
    for key, value in s_state.items():
        source = key
        for stack_name, mapping in maps.items():
            m = re.match(rf"{re.escape(stack_name)}\.layers\.(\d+)\.(.*)", key)
            if m:
                source = f"{stack_name}.layers.{mapping[int(m.group(1))]}.{m.group(2)}"
        if source in t_state and t_state[source].shape == value.shape:
            copied[key] = t_state[source]
    student.load_state_dict(copied, strict=False)
    return len(copied)


class Distillation(Task):
    """Train a student (the injected `model`) from a frozen teacher of the same family.

    Args:
        model: the student (a zoo GPT, BERT, T5 or BART).
        teacher: the teacher: a zoo `.ckpt` or a Hugging Face directory (from Python, also a built model).
        teacher_quantize: quantize the teacher with torchao first ("int8-weight", ...; see `zoo quantize`).
        alpha: weight of the soft (teacher) term; 1 − alpha weighs the student's own objective.
        temperature: softmax temperature T of both models in the soft term.
        cosine_weight: weight of 1 − cos(student, teacher) on the final hidden states (equal widths only).
        init_from_teacher: start the student from the teacher's weights, every other layer (DistilBERT).
        chunk_size: rows (tokens; sequences for T5/BART) per chunk of the loss.
        optimizer, schedule, warmup_steps, min_lr_ratio: as in every task.
    """

    def __init__(self, model: nn.Module, teacher: str, teacher_quantize: Optional[str] = None, alpha: float = 0.5,
                 temperature: float = 2.0, cosine_weight: float = 0.0, init_from_teacher: bool = False,
                 chunk_size: int = 1024, optimizer: OptimizerCallable = torch.optim.AdamW,
                 schedule: Schedule = "cosine", warmup_steps: int = 100, min_lr_ratio: float = 0.1, **kwargs):
        super().__init__(model, optimizer, schedule, warmup_steps, min_lr_ratio, **kwargs)
        from zoo.checkpoint import load_model

        if not isinstance(teacher, str):  # a module passed in Python: keep it out of the saved hyperparameters
            self._hparams.pop("teacher", None)

        teacher_model, _ = load_model(teacher) if isinstance(teacher, str) else (teacher, None)
        self.setup_teacher(teacher_model, teacher_quantize, init_from_teacher)
        if not 0 <= alpha <= 1 or temperature <= 0:
            raise ZooError(f"need 0 ≤ alpha ≤ 1 and temperature > 0; got alpha={alpha}, temperature={temperature}")
        self.alpha, self.temperature, self.cosine_weight, self.chunk_size = alpha, temperature, cosine_weight, chunk_size
        self.val_loss, self.val_ppl = MeanMetric(), LossPerplexity()

    def setup_teacher(self, teacher: nn.Module, quantize: Optional[str], init: bool) -> None:
        from zoo.families import family_of

        if family_of(teacher) is not family_of(self.model):
            raise ZooError(f"the teacher is a {family_of(teacher).name} model and the student a "
                           f"{family_of(self.model).name}; distil within one family")
        if init:
            init_from_teacher(self.model, teacher)
        teacher.eval().requires_grad_(False)
        if quantize:
            from zoo.compress.quantize import quantize as quantize_model

            quantize_model(teacher, quantize)
        self._teacher = [teacher]  # in a list: not a submodule, so not trained, saved or sharded

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.teacher.to(self.device).eval()

    def on_validation_start(self) -> None:
        self.teacher.to(self.device).eval()

    def losses(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean KL at T, student's mean CE, mean 1 − cos of final hidden states or 0)."""
        s, t, labels = self.model, self.teacher, batch["labels"]
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        if isinstance(s, Seq2SeqModel):
            dec = s.shift_right(labels)
            hs = s.encode(ids, mask)
            with torch.no_grad():
                ht = t.encode(ids, mask)
            s_rows = lambda i: s.decode(dec[i], hs[i], mask[i] if mask is not None else None)  # noqa: E731
            t_rows = lambda i: t.decode(dec[i], ht[i], mask[i] if mask is not None else None)  # noqa: E731
            kl, ce = chunked_distillation_terms(s_rows, t_rows, labels, self.temperature,
                                                max(1, self.chunk_size // labels.shape[1]))
            return kl, ce, self._cosine(hs, ht, mask)
        if isinstance(s, CausalLMModel):
            hs = s.hidden_states(ids, mask)
            with torch.no_grad():
                ht = t.hidden_states(ids, mask)
            s_head, t_head = s.lm_head, t.lm_head
        elif isinstance(s, MaskedLMModel):
            hs = s.encode(ids, mask, batch.get("token_type_ids"))
            with torch.no_grad():
                ht = t.encode(ids, mask, batch.get("token_type_ids"))
            s_head, t_head = s.mlm_logits, t.mlm_logits
        else:
            raise ZooError(f"distillation needs a causal LM, masked LM or seq2seq student; got {type(s).__name__}")
        flat_s, flat_t, flat_labels = hs.flatten(0, 1), ht.flatten(0, 1), labels.flatten()
        kl, ce = chunked_distillation_terms(lambda i: s_head(flat_s[i]), lambda i: t_head(flat_t[i]), flat_labels,
                                            self.temperature, self.chunk_size)
        return kl, ce, self._cosine(hs, ht, mask)

    def _cosine(self, hs: torch.Tensor, ht: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.cosine_weight == 0 or hs.shape[-1] != ht.shape[-1]:
            return hs.new_zeros(())
        cos = 1 - F.cosine_similarity(hs.float(), ht.detach().float(), dim=-1)  # (B, T)
        if mask is None:
            return cos.mean()
        m = mask.to(cos.dtype)
        return (cos * m).sum() / m.sum().clamp(min=1)

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        kl, ce, cos = self.losses(batch)
        total = self.alpha * self.temperature**2 * kl + (1 - self.alpha) * ce + self.cosine_weight * cos
        return total, ce

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, ce = self.loss(batch)
        self.log("train/loss", total, prog_bar=True)
        self.log("train/student_ce", ce)
        self._log_lr()
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, ce = self.loss(batch)
        n = self.count_tokens(batch["labels"])
        self.val_loss.update(ce, weight=n)
        self.val_ppl.update(ce, weight=n)
        # the student's own objective: comparable with the same student trained by its family's task
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/ppl", self.val_ppl, prog_bar=True)
