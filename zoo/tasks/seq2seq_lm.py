"""Sequence-to-sequence language modelling: teacher-forced cross-entropy on the targets (T5, Raffel
et al., 2020; BART, Lewis et al., 2020), with decoding scored during validation.

Validation computes the loss on every batch and, on the first ``generate_batches`` batches,
decodes greedily and with beam search through ``model.generate`` (KV-cached), scoring both against
the targets with corpus BLEU (Papineni et al., 2002; ``torchmetrics.text.BLEUScore``, smoothed so a
young model scores above zero) and ROUGE-L F1 (Lin, 2004; ``torchmetrics.text.ROUGEScore`` with
``rouge_keys=("rougeL",)``, which needs no nltk: only stemming and ROUGE-Lsum do).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from zoo.errors import ZooError
from zoo.evaluation import metrics
from zoo.tasks.base import Schedule, Task

IGNORE_INDEX = -100


def seq2seq_loss(model: nn.Module, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: the decoder reads ``shift_right(labels)`` and predicts ``labels`` (-100 skipped)."""
    decoder_input_ids = model.shift_right(labels)  # (B, Td): start token, then labels[:, :-1]
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   decoder_input_ids=decoder_input_ids)  # (B, Td, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
    return loss, logits


def check_special_ids(model: nn.Module, datamodule) -> None:
    """The model's pad/eos ids must be the tokenizer's: a mismatch trains on the wrong targets."""
    config = model.config
    for name in ("pad_token_id", "eos_token_id"):
        theirs, mine = getattr(datamodule, name, None), getattr(config, name, None)
        if theirs is not None and mine is not None and theirs != mine:
            raise ZooError(
                f"the tokenizer's {name.replace('_token_id', '')} id is {theirs} but the model's config says "
                f"{name}={mine}; set --model.init_args.model.init_args.config.{name} {theirs}"
            )


def ids_to_text(ids: list[int], tokenizer, drop: set[int], stop: Optional[int]) -> str:
    """Text of ``ids`` cut at ``stop`` (eos), without the ``drop`` ids (pad, start); sentinels and
    ``<mask>`` stay, since they are part of a span-corruption target. Without a tokenizer, the ids."""
    if stop is not None and stop in ids:
        ids = ids[: ids.index(stop)]
    ids = [i for i in ids if i not in drop and i >= 0]
    if tokenizer is None:
        return " ".join(map(str, ids))
    return tokenizer.decode(ids, skip_special_tokens=False)


def output_text(model: nn.Module, ids: list[int], tokenizer) -> str:
    """A decoder output's (or target's) text, as BLEU and ROUGE score it: cut at eos, without pad and start ids."""
    c = model.config
    drop = {c.pad_token_id, c.decoder_start_token_id, getattr(c, "bos_token_id", None)} - {c.eos_token_id, None}
    return ids_to_text(ids, tokenizer, drop, c.eos_token_id)


class Seq2SeqLM(Task):
    """Train an encoder-decoder on (input_ids → labels) pairs, e.g. span corruption or infilling.

    Logs train/val loss and perplexity, and for the decoded batches ``val/bleu_greedy``,
    ``val/bleu_beam``, ``val/rougeL_greedy`` and ``val/rougeL_beam`` (in [0, 1]).

    Args:
        model: an encoder-decoder with `shift_right` and `generate` (`zoo.models.T5`, `zoo.models.Bart`).
        optimizer: optimizer factory (default AdamW).
        schedule: "cosine", "linear" or "constant" after warm-up.
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: final learning rate as a fraction of the peak.
        generate_batches: validation batches decoded and scored each validation (0 turns decoding off).
        generate_examples: examples decoded per such batch (None: all); beam search is the slow part.
        max_new_tokens: decoding length limit (None = the batch's target length).
        num_beams: beams for the beam-search decode.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Schedule = "cosine",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        generate_batches: int = 1,
        generate_examples: Optional[int] = 8,
        max_new_tokens: Optional[int] = None,
        num_beams: int = 4,
        **kwargs,
    ):
        super().__init__(model, optimizer, schedule, warmup_steps, min_lr_ratio, **kwargs)
        if generate_batches < 0 or num_beams < 1:
            raise ZooError("need generate_batches >= 0 and num_beams >= 1")
        self.generate_examples = generate_examples
        self.generate_batches, self.max_new_tokens, self.num_beams = generate_batches, max_new_tokens, num_beams
        self.train_ppl, self.val_ppl = metrics.perplexity(), metrics.perplexity()
        self.val_loss = MeanMetric()
        self.bleu = nn.ModuleDict({m: metrics.bleu() for m in ("greedy", "beam")})
        self.rouge = nn.ModuleDict({m: metrics.rouge_l() for m in ("greedy", "beam")})
        self.last_examples: list[tuple[str, str, str]] = []  # (target, greedy, beam) of the last validation

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None:
            check_special_ids(self.model, dm)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logits = seq2seq_loss(self.model, batch, batch["labels"])
        self.train_ppl(logits.detach().float(), batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", self.train_ppl)
        self._log_lr()
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = seq2seq_loss(self.model, batch, batch["labels"])
        self.val_loss.update(loss, weight=self.count_tokens(batch["labels"]))
        self.val_ppl(logits.float(), batch["labels"])
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/ppl", self.val_ppl)
        if batch_idx < self.generate_batches:
            n = self.generate_examples
            self._score_decoding({k: v[:n] for k, v in batch.items()} if n else batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, _ = seq2seq_loss(self.model, batch, batch["labels"])
        self.log("test/loss", loss, batch_size=self.count_tokens(batch["labels"]))

    def decode_texts(self, batch: dict, num_beams: int) -> list[str]:
        """Generated texts for the batch's inputs (greedy when ``num_beams`` is 1)."""
        limit = self.max_new_tokens or batch["labels"].shape[1]
        out = self.model.generate(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                  max_new_tokens=limit, num_beams=num_beams)  # (B, 1 + n), start token first
        return [self._text(row[1:].tolist()) for row in out]

    def _text(self, ids: list[int]) -> str:
        return output_text(self.model, ids, self.tokenizer())

    def _score_decoding(self, batch: dict, batch_idx: int) -> None:
        targets = [self._text(row.tolist()) for row in batch["labels"]]
        decoded = {"greedy": self.decode_texts(batch, 1), "beam": self.decode_texts(batch, self.num_beams)}
        for mode, texts in decoded.items():
            self.bleu[mode].update(texts, [[t] for t in targets])
            self.rouge[mode].update(texts, targets)
        self._decoded = True
        if batch_idx == 0:
            self.last_examples = list(zip(targets, decoded["greedy"], decoded["beam"]))[:2]

    def on_validation_epoch_start(self) -> None:
        self._decoded = False

    def on_validation_epoch_end(self) -> None:
        # ROUGEScore returns a dict, which `self.log` cannot take as a metric: compute, log, reset.
        if not getattr(self, "_decoded", False):
            return
        for mode in ("greedy", "beam"):
            self.log(f"val/bleu_{mode}", self.bleu[mode].compute())
            self.log(f"val/rougeL_{mode}", self.rouge[mode].compute()["rougeL_fmeasure"])
            self.bleu[mode].reset()
            self.rouge[mode].reset()
        if self.last_examples and not self.trainer.sanity_checking:
            target, greedy, beam = self.last_examples[0]
            self.log_text("decode", f"target: {target[:200]} | greedy: {greedy[:200]} | beam: {beam[:200]}")
