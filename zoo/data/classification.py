"""Text classification data: a CSV or JSONL file of (text, label) rows, or, with none given, a task
built from the default corpus: which Python documentation topic does a paragraph come from?

Every batch serves both ways of fine-tuning (Devlin et al. 2019 for encoders; Raffel et al. 2020
for text-to-text): ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (the text through the
tokenizer's post-processor: ``[CLS] text [SEP]``, ``text </s>`` or ``<s> text </s>``), ``labels``
(class indices) and ``target_ids`` (the label's name as the decoder's target, -100 padded).

The embedded task: the corpus is cleaned as ``TextDataModule`` cleans it (so a paragraph repeated
in two topics is kept only in the first), paragraphs of at least ``min_paragraph_chars`` are
grouped by topic, the ``num_topics`` topics with the most paragraphs are kept (at most
``max_per_topic`` each), and a seeded hash of each paragraph splits every topic into train and
validation in the same proportion. Everything is deterministic.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch import LightningDataModule
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from zoo.data import split
from zoo.data.cleaning import clean_documents, split_paragraphs
from zoo.data.sampling import evaluation_loader, resumable_loader
from zoo.data.sources import load_documents, read_text_file
from zoo.data.split import unit_hash
from zoo.data.text import TextDataModule
from zoo.data.tokenized import TokenizerMixin
from zoo.data.tokenizer import TokenizerKind
from zoo.errors import ZooError

Example = tuple[str, str]  # (text, label name)


def topic_examples(source: str = "pydoc", num_topics: int = 6, min_paragraph_chars: int = 80,
                   max_per_topic: Optional[int] = 80, topics: Optional[list[str]] = None) -> list[Example]:
    """(paragraph, topic) pairs of the ``num_topics`` largest topics (or of ``topics``)."""
    docs, _ = clean_documents(load_documents(source))
    by_topic: dict[str, list[str]] = {}
    for doc in docs:
        paragraphs = [p for p in split_paragraphs(doc.text) if len(p.strip()) >= min_paragraph_chars]
        if paragraphs:
            by_topic.setdefault(doc.id, []).extend(paragraphs)
    if topics is None:
        ranked = sorted(by_topic, key=lambda t: (-len(by_topic[t]), t))
        topics = sorted(ranked[:num_topics])
    missing = [t for t in topics if t not in by_topic]
    if missing or len(topics) < 2:
        raise ZooError(f"topics {missing or topics} have no paragraphs of {min_paragraph_chars}+ characters in "
                       f"{source!r} (or fewer than 2 topics); pick others with --data.topics "
                       "or lower --data.min_paragraph_chars")
    examples = []
    for topic in topics:
        paragraphs = sorted(by_topic[topic], key=lambda p: unit_hash(0, p, byteorder="little"))  # a fixed, content-based order
        examples += [(p, topic) for p in paragraphs[:max_per_topic]]
    return examples


def read_examples(path: str, text_field: str = "text", label_field: str = "label") -> list[Example]:
    """(text, label) rows of a ``.csv`` (with a header row) or ``.jsonl`` file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ZooError(f"classification file {file} does not exist; pass a .csv or .jsonl file")
    text = read_text_file(file)
    if file.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    elif file.suffix.lower() in (".jsonl", ".json"):
        rows = [_json_row(line, file, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        raise ZooError(f"{file} is neither .csv nor .jsonl; write the examples as one of those")
    if not rows:
        raise ZooError(f"{file} holds no examples")
    for n, row in enumerate(rows, 1):
        if text_field not in row or label_field not in row:
            raise ZooError(f"{file} row {n} lacks the {text_field!r} or {label_field!r} field (it has "
                           f"{', '.join(map(repr, row))}); set --data.text_field / --data.label_field")
    return [(str(row[text_field]), str(row[label_field])) for row in rows]


def _json_row(line: str, file: Path, lineno: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ZooError(f"{file}:{lineno} is not valid JSON ({err.msg}); fix or delete that line") from err
    if not isinstance(row, dict):
        raise ZooError(f"{file}:{lineno} is not a JSON object")
    return row


def stratified_split(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Per label, the ``val_fraction`` of examples with the smallest seeded hash of their text go to validation."""
    labels = [label for _, label in examples]
    ranked = [unit_hash(seed, text, byteorder="little") for text, _ in examples]
    train, val = split.stratified_split(labels, val_fraction, seed, scores=ranked)

    # Mixed labels in a fixed order, so a partial pass (limit_val_batches) still sees every label.
    def mixed(index: torch.Tensor) -> list[Example]:
        order = sorted(index.tolist(), key=lambda i: (unit_hash(seed + 1, examples[i][0], byteorder="little"),
                                                      labels[i], i))
        return [examples[i] for i in order]

    return mixed(train), mixed(val)


class ClassificationDataModule(TokenizerMixin, LightningDataModule):
    """Sequence classification batches (see the module docstring) for `zoo.tasks.SequenceClassification`.

    Args:
        train_file: a .csv (header row) or .jsonl file of examples; None for the embedded topic task.
        val_file: validation examples; None splits ``val_fraction`` of the training file off, per label.
        test_file: test examples; None tests on the validation split.
        text_field: column/field holding the text. label_field: column/field holding the label.
        labels: label names in class-index order; default: the sorted training labels.
        corpus: corpus of the embedded task and of the tokenizer trained when none is given.
        topics: the embedded task's topics; default: the ``num_topics`` with the most paragraphs.
        num_topics: how many topics the embedded task picks.
        min_paragraph_chars: shortest paragraph the embedded task keeps.
        max_per_topic: most paragraphs per topic (None: all; the largest topics would dominate).
        val_fraction: share of each label held out when no ``val_file`` is given.
        max_length: input tokens per example (longer texts are truncated, special tokens kept).
        batch_size: examples per batch.
        tokenizer: a tokenizer.json (or folder) or a zoo .ckpt carrying one: use the pre-trained
            model's tokenizer when fine-tuning. None trains one exactly as
            `TextDataModule(source=corpus, tokenizer_kind=..., vocab_size=..., special_tokens=...)`
            does, which finds the same cached tokenizer as a pre-training run with those settings.
        tokenizer_kind, vocab_size, special_tokens: that tokenizer's settings.
        seed: seed of the train/validation split and of the shuffle.
        num_workers: DataLoader worker processes.
        cache_dir: tokenizer cache folder (as `TextDataModule`).
    """

    def __init__(
        self,
        train_file: Optional[str] = None,
        val_file: Optional[str] = None,
        test_file: Optional[str] = None,
        text_field: str = "text",
        label_field: str = "label",
        labels: Optional[list[str]] = None,
        corpus: str = "pydoc",
        topics: Optional[list[str]] = None,
        num_topics: int = 6,
        min_paragraph_chars: int = 80,
        max_per_topic: Optional[int] = 80,
        val_fraction: float = 0.2,
        max_length: int = 128,
        batch_size: int = 16,
        tokenizer: Optional[str] = None,
        tokenizer_kind: TokenizerKind = "wordpiece",
        vocab_size: int = 4096,
        special_tokens: Optional[list[str]] = None,
        seed: int = 1234,
        num_workers: int = 0,
        cache_dir: Optional[str] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 < val_fraction < 1.0 or max_length < 4 or batch_size < 1:
            raise ZooError("need 0 < val_fraction < 1, max_length >= 4 and batch_size >= 1")
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.text_field, self.label_field, self.label_list = text_field, label_field, labels
        self.corpus, self.topics, self.num_topics = corpus, topics, num_topics
        self.min_paragraph_chars, self.max_per_topic = min_paragraph_chars, max_per_topic
        self.val_fraction = val_fraction
        self.max_length, self.batch_size, self.seed, self.num_workers = max_length, batch_size, seed, num_workers
        self.tokenizer_file, self.cache_dir = tokenizer, cache_dir
        self.tokenizer_settings = {"tokenizer_kind": tokenizer_kind, "vocab_size": vocab_size,
                                   "special_tokens": special_tokens}
        self._splits: Optional[dict[str, list[Example]]] = None

    # ----------------------------------------------------------------- examples
    def examples(self, split: str = "train") -> list[Example]:
        """(text, label name) pairs of "train", "val" or "test"."""
        if self._splits is None:
            self._splits = self._load_splits()
        return self._splits[split]

    def _load_splits(self) -> dict[str, list[Example]]:
        fields = (self.text_field, self.label_field)
        if self.files["train"] is None:
            every = topic_examples(self.corpus, self.num_topics, self.min_paragraph_chars, self.max_per_topic,
                                   self.topics)
            train, val = stratified_split(every, self.val_fraction, self.seed)
        else:
            train = read_examples(self.files["train"], *fields)
            if self.files["val"] is None:
                train, val = stratified_split(train, self.val_fraction, self.seed)
            else:
                val = read_examples(self.files["val"], *fields)
        test = read_examples(self.files["test"], *fields) if self.files["test"] else val
        splits = {"train": train, "val": val, "test": test}
        known = set(self.label_list or [lab for _, lab in train])
        for name, rows in splits.items():
            unknown = sorted({lab for _, lab in rows} - known)
            if unknown:
                raise ZooError(f"the {name} split has labels {unknown[:5]} that the training split lacks; "
                               "list every label in --data.labels")
        return splits

    @property
    def label_names(self) -> list[str]:
        """Label names in class-index order."""
        return list(self.label_list) if self.label_list else sorted({lab for _, lab in self.examples("train")})

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_counts(self, split: str = "train") -> dict[str, int]:
        return dict(sorted(Counter(lab for _, lab in self.examples(split)).items()))

    # ----------------------------------------------------------------- tokenizer
    def build_tokenizer(self) -> tuple[Tokenizer, Path]:
        """The tokenizer a pre-training `TextDataModule` on ``corpus`` with these settings trains (or cached)."""
        text = TextDataModule(source=self.corpus, cache_dir=self.cache_dir, **self.tokenizer_settings)
        return text.tokenizer, Path(text.tokenizer_path)

    def label_target_ids(self) -> list[list[int]]:
        """Each label name as a decoder target, with the tokenizer's special tokens (``name </s>``)."""
        return [self._encoder().encode(name).ids for name in self.label_names]

    def _encoder(self) -> Tokenizer:
        tok = Tokenizer.from_str(self.tokenizer.to_str())  # a copy: truncation is set on it, not on ours
        tok.no_padding()
        tok.enable_truncation(self.max_length)
        return tok

    # ----------------------------------------------------------------- loaders
    def encode(self, split: str) -> list[dict]:
        """The split's examples as token-id lists (inputs, label index, target ids)."""
        rows, tok = self.examples(split), self._encoder()
        index = {name: i for i, name in enumerate(self.label_names)}
        targets = self.label_target_ids()
        encodings = tok.encode_batch([text for text, _ in rows])
        return [{"input_ids": enc.ids, "label": index[lab], "target_ids": targets[index[lab]]}
                for enc, (_, lab) in zip(encodings, rows)]

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest example: inputs with the pad id, targets with -100."""
        inputs = _pad([r["input_ids"] for r in rows], self.pad_token_id)
        return {
            "input_ids": inputs,
            "attention_mask": _pad([[1] * len(r["input_ids"]) for r in rows], 0),
            "token_type_ids": torch.zeros_like(inputs),
            "labels": torch.tensor([r["label"] for r in rows]),
            "target_ids": _pad([r["target_ids"] for r in rows], -100),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if shuffle:  # seeded, sharded over ranks, resumable mid-epoch
            return resumable_loader(self.encode(split), self.batch_size, self.seed, self.trainer,
                                    collate_fn=self.collate, num_workers=self.num_workers)
        return evaluation_loader(self.encode(split), self.batch_size, self.seed, collate_fn=self.collate,
                                 num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
