"""Sequence classification fine-tuning, three ways:

- an encoder's pooled head (BERT; Devlin et al., 2019): dropout and a linear classifier on the
  pooler output (tanh(dense(h_[CLS]))), trained with cross-entropy;
- a decoder's last-token head (GPT; Radford et al., 2018): the same classifier on the final hidden
  state of each text's last real token, the only position that has read the whole text under
  causal attention;
- text-to-text (T5, Raffel et al., 2020; BART, Lewis et al., 2020): the label's name is the
  decoder's target. Predictions rank the label names by their log-likelihood under the model
  ("score", rank classification: always a valid label), or take the greedy decode ("generate",
  where a text matching no label counts as an error).

All report accuracy and macro-F1 (``torchmetrics``). ``init_from`` starts from a pre-trained
zoo checkpoint (weights loaded through ``zoo.checkpoint.model_from_checkpoint``).
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from zoo.errors import ZooError
from zoo.evaluation import metrics
from zoo.families import can, family_of, require
from zoo.models.base import Capability
from zoo.tasks.base import Schedule, Task
from zoo.tasks.seq2seq_lm import check_special_ids, seq2seq_loss

log = logging.getLogger("zoo")

Mode = Literal["auto", "head", "text_to_text"]
Predict = Literal["score", "generate"]


def load_pretrained(model: nn.Module, path: str) -> nn.Module:
    """Copy a zoo checkpoint's weights into ``model`` (same family and shapes), in place."""
    from zoo.adapters import merge_lora
    from zoo.checkpoint import model_from_checkpoint

    pretrained, _ = model_from_checkpoint(path)
    pretrained = merge_lora(pretrained)  # a LoRA run's checkpoint: its adapters folded into the weights
    family, mine = family_of(pretrained).name, family_of(model).name
    if family != mine:
        raise ZooError(f"init_from '{path}' holds a {family} model but the config builds a {mine}; "
                       f"pass a {mine} checkpoint")
    state = pretrained.state_dict()
    fresh = {k: v for k, v in model.state_dict().items() if k not in state}  # e.g. a pooler pre-training lacked
    if any(not k.startswith("pooler.") for k in fresh):
        raise ZooError(f"init_from '{path}' lacks weights the configured model needs ({sorted(fresh)[:3]}); "
                       "use the architecture the checkpoint was trained with")
    state.update(fresh)
    try:
        model.load_state_dict(state)
        log.info("init_from: loaded %d weight tensors from '%s'%s", len(state) - len(fresh), path,
                 f" (new: {', '.join(sorted(fresh))})" if fresh else "")
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ZooError(f"init_from '{path}' does not fit the configured model ({first}); "
                       "use the architecture the checkpoint was trained with") from err
    return model


class SequenceClassification(Task):
    """Fine-tune a model to classify texts (batches from `zoo.data.ClassificationDataModule`).

    Logs train/val loss, ``val/acc`` and ``val/macro_f1``.

    Args:
        model: any zoo model with features (head mode: BERT's pooler, GPT's last token, T5/BART's
            mean-pooled encoder, CLIP's text embedding) or an encoder-decoder (text-to-text: T5, BART).
        optimizer: optimizer factory (default AdamW).
        schedule: "cosine", "linear" or "constant" after warm-up.
        warmup_steps: optimizer steps of linear warm-up.
        min_lr_ratio: final learning rate as a fraction of the peak.
        num_labels: classes; None reads `num_labels` off the data module at setup.
        mode: "head", "text_to_text", or "auto" (text-to-text for encoder-decoders, else head).
        predict_with: text-to-text predictions by "score" (rank the label names) or "generate".
        classifier_dropout: dropout before the linear classifier (head mode).
        init_from: a zoo `.ckpt` to load the model's weights from before fine-tuning.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: Schedule = "cosine",
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.1,
        num_labels: Optional[int] = None,
        mode: Mode = "auto",
        predict_with: Predict = "score",
        classifier_dropout: float = 0.1,
        init_from: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(model, optimizer, schedule, warmup_steps, min_lr_ratio, **kwargs)
        self.text_to_text = mode == "text_to_text" or (mode == "auto" and can(model, Capability.SEQ2SEQ))
        require(model, Capability.SEQ2SEQ if self.text_to_text else Capability.FEATURES,
                f"classification in mode {'text_to_text' if self.text_to_text else 'head'}")
        self.predict_with, self.classifier_dropout, self.init_from = predict_with, classifier_dropout, init_from
        self.pretrained_tokenizer = None
        if init_from:
            load_pretrained(model, init_from)
            from zoo.checkpoint import read_checkpoint

            self.pretrained_tokenizer = (read_checkpoint(init_from).get("zoo") or {}).get("tokenizer")
        self.num_labels: Optional[int] = None
        self.register_buffer("label_targets", torch.zeros(0, 0, dtype=torch.long), persistent=False)
        self.val_loss = MeanMetric()
        if num_labels is not None:
            self._build(num_labels)

    # ----------------------------------------------------------------- set-up
    def _build(self, num_labels: int) -> None:
        """The classifier (head mode) and the metrics, once the number of classes is known."""
        if num_labels < 2:
            raise ZooError(f"classification needs at least 2 labels, got {num_labels}")
        self.num_labels = num_labels
        if not self.text_to_text and not hasattr(self, "classifier"):
            self.classifier = nn.Sequential(nn.Dropout(self.classifier_dropout), self._new_head(num_labels))
        self.val_acc, self.val_f1 = metrics.accuracy(num_labels), metrics.macro_f1(num_labels)
        self.train_acc = metrics.accuracy(num_labels)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        if self.num_labels is None:
            self._build(dm.num_labels)
            self.to(self.device)
        elif dm.num_labels != self.num_labels:
            raise ZooError(f"the data has {dm.num_labels} labels but num_labels={self.num_labels}; "
                           "fix --model.init_args.num_labels")
        if self.pretrained_tokenizer and dm.tokenizer.to_str() != self.pretrained_tokenizer:
            raise ZooError(f"the data module's tokenizer is not the one {self.init_from} was trained with; "
                           f"set --data.init_args.tokenizer {self.init_from}")
        if self.text_to_text:
            check_special_ids(self.model, dm)
            self.set_label_targets(dm.label_target_ids())

    def set_label_targets(self, targets: list[list[int]]) -> None:
        """Each label name's target ids (C, L), -100 padded, for rank classification."""
        table = torch.full((len(targets), max(map(len, targets))), -100, dtype=torch.long)
        for i, ids in enumerate(targets):
            table[i, : len(ids)] = torch.tensor(ids)
        self.label_targets = table.to(self.device)

    # ----------------------------------------------------------------- objective
    def _step(self, batch: dict) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Loss and, in head mode, the class logits (B, C)."""
        if self.text_to_text:
            loss, _ = seq2seq_loss(self.model, batch, batch["target_ids"])
            return loss, None
        logits = self.classifier(self.features(batch))  # (B, C)
        return F.cross_entropy(logits.float(), batch["labels"]), logits

    def features(self, batch: dict, net: Optional[nn.Module] = None) -> torch.Tensor:
        """What the head mode's classifier reads (B, C): the model's `features` (BERT's pooler output,
        GPT's last token, ...); of `net` (default the task's model)."""
        net = self.model if net is None else net
        return net.features(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    def _new_head(self, num_labels: int) -> nn.Linear:
        """The linear head with `nn.Linear`'s own initialisation (uniform within ±1/√width), drawn from a
        generator seeded by the run's seed: this runs in `setup`, after Lightning has drawn from the
        global generator a different number of times in one process and in several (process-group
        set-up), and every strategy must start from the same head."""
        width = self.model.feature_dim
        head = nn.Linear(width, num_labels)
        g = torch.Generator().manual_seed(torch.initial_seed() % 2**63 + num_labels)
        with torch.no_grad():
            for p in (head.weight, head.bias):
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / math.sqrt(width))
        return head

    def configure_model(self) -> None:
        """The model's parallelism (`Task.configure_model`), and the classifier head, which lives in the
        task, sharded over the same data-parallel ranks so that its gradients are reduced with the rest."""
        super().configure_model()
        if getattr(self, "classifier", None) is not None and self.device_mesh is not None:
            from zoo.parallel import shard_module

            shard_module(self.classifier, self.device_mesh["data_parallel"])

    def flop_forward(self, net: nn.Module, inputs: dict) -> torch.Tensor:
        """What a training step computes with `net` (a meta-device copy of the model, for the
        Throughput callback's FLOP count): the features, not the pre-training head the model keeps.
        The classifier itself (C × num_labels) is left out: its cost is negligible."""
        return net(**inputs) if self.text_to_text else self.features(inputs, net)

    def predict_labels(self, batch: dict) -> torch.Tensor:
        """Predicted class indices (B,)."""
        if not self.text_to_text:
            return self.classifier(self.features(batch)).argmax(-1)
        return self._generate_labels(batch) if self.predict_with == "generate" else self._score_labels(batch)

    def _score_labels(self, batch: dict) -> torch.Tensor:
        """Rank classification: the label whose name has the highest summed log-probability."""
        B, C = batch["input_ids"].shape[0], self.label_targets.shape[0]
        memory = self.model.encode(batch["input_ids"], batch.get("attention_mask"))  # (B, S, D)
        targets = self.label_targets.repeat(B, 1)  # (B·C, L): row b·C + c is label c for item b
        mask = batch.get("attention_mask")
        logits = self.model(None, attention_mask=mask.repeat_interleave(C, 0) if mask is not None else None,
                            decoder_input_ids=self.model.shift_right(targets),
                            encoder_hidden_states=memory.repeat_interleave(C, 0))  # (B·C, L, V)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
        return (logp * (targets != -100)).sum(-1).view(B, C).argmax(-1)

    def _generate_labels(self, batch: dict) -> torch.Tensor:
        """Greedy decode compared with each label's target; no match counts as a wrong class."""
        L = self.label_targets.shape[1]
        out = self.model.generate(batch["input_ids"], attention_mask=batch.get("attention_mask"), max_new_tokens=L)
        decoded = F.pad(out[:, 1:], (0, max(0, L - out.shape[1] + 1)), value=-100)[:, :L]  # (B, L)
        pad = self.model.config.pad_token_id
        decoded = decoded.masked_fill(decoded == pad, -100)  # padding after eos is not part of the answer
        match = (decoded[:, None, :] == self.label_targets[None]).all(-1)  # (B, C)
        wrong = (batch["labels"] + 1) % self.label_targets.shape[0]
        return torch.where(match.any(-1), match.float().argmax(-1), wrong)

    # ----------------------------------------------------------------- loops
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logits = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        if logits is not None:
            self.train_acc(logits.detach().argmax(-1), batch["labels"])
            self.log("train/acc", self.train_acc, batch_size=len(batch["labels"]))
        self._log_lr()
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict, split: str) -> None:
        loss, _ = self._step(batch)
        preds = self.predict_labels(batch)
        n = len(batch["labels"])
        self.val_loss.update(loss, weight=n)
        self.val_acc(preds, batch["labels"])
        self.val_f1(preds, batch["labels"])
        self.log(f"{split}/loss", self.val_loss, prog_bar=True, batch_size=n)
        self.log(f"{split}/acc", self.val_acc, prog_bar=True, batch_size=n)
        self.log(f"{split}/macro_f1", self.val_f1, prog_bar=True, batch_size=n)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        checkpoint["zoo"]["labels"] = list(getattr(dm, "label_names", []) or [])
        checkpoint["zoo"]["num_labels"] = self.num_labels
