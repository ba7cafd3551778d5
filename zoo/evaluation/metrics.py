"""One implementation per metric, shared by the tasks' validation and `zoo evaluate`, so that a
checkpoint's logged validation figure and its evaluation figure on the same split agree.

Every metric is a `torchmetrics` object (or a pure function of tensors, for the retrieval metrics
that need the whole split at once); the tasks in `zoo.tasks` build theirs here.

- perplexity: exp of the token-mean cross-entropy (`torchmetrics.text.Perplexity`, -100 skipped);
- bits per character: the same summed cross-entropy in bits, over the characters the scored tokens
  decode to (comparable across tokenizers, unlike perplexity);
- BLEU (Papineni et al., 2002; corpus level, 4-grams, smoothed so a young model scores above zero)
  and ROUGE-L F1 (Lin, 2004; torchmetrics' pure-python implementation: no nltk is needed for ROUGE-L,
  only stemming and ROUGE-Lsum need it);
- accuracy (micro) and macro-F1 (`torchmetrics.classification`);
- recall@k for retrieval and zero-shot accuracy (CLIP; Radford et al., 2021).

Imports only torch and torchmetrics: the tasks and the evaluation command both sit above it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.text import BLEUScore, Perplexity, ROUGEScore

IGNORE_INDEX = -100


def perplexity() -> Perplexity:
    """Token perplexity over the labels that are not -100 (logits (B, T, V), labels (B, T))."""
    return Perplexity(ignore_index=IGNORE_INDEX)


def bleu() -> BLEUScore:
    return BLEUScore(n_gram=4, smooth=True)


def rouge_l() -> ROUGEScore:
    """ROUGE-L; `compute()["rougeL_fmeasure"]` is the F1 figure the tasks log."""
    return ROUGEScore(rouge_keys=("rougeL",))


def accuracy(num_classes: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=num_classes, average="micro")


def macro_f1(num_classes: int) -> MulticlassF1Score:
    return MulticlassF1Score(num_classes=num_classes, average="macro")


class BitsPerCharacter(Metric):
    """Summed cross-entropy of the scored tokens, in bits, per character of the text they decode to.

    `update(logits (B, T, V), labels (B, T), characters)`: `characters` is how many characters the
    batch's scored labels decode to (the caller decodes: the metric knows no tokenizer).
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("nats", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("characters", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, characters: int) -> None:
        nll = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                              reduction="sum")
        self.nats += nll.double()
        self.characters += int(characters)

    def compute(self) -> torch.Tensor:
        return self.nats / math.log(2) / self.characters.clamp(min=1)


def recall_at_k(similarity: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """Share of queries with a positive among their top k candidates.

    similarity: (Q, C) scores; positives: (Q, C) bool, at least one per query. A query's rank
    is the number of candidates scoring strictly above its best positive (ties count in its
    favour), and it is a hit when that rank is below k.
    """
    best_positive = similarity.masked_fill(~positives, float("-inf")).max(dim=1, keepdim=True).values
    rank = (similarity > best_positive).sum(dim=1)
    return (rank < k).float().mean()


def zero_shot_accuracy(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of images whose most similar class embedding is their label."""
    return ((image_embeds.float() @ class_embeds.t()).argmax(dim=-1) == labels).float().mean()
