"""``TextDataModule``: corpus → cleaning → split → tokenizer → cached token stream → packed blocks.

The language-modelling data pipeline of GPT-2 / nanoGPT, as a LightningDataModule whose typed
``__init__`` is the ``data:`` section of a config. Each stage is its own module
(``sources``, ``cleaning``, ``split``, ``tokenizer``, ``cache``, ``packing``); this file wires
them together and decides when each runs:

- the tokenizer is loaded or trained lazily, on first access of ``tokenizer`` or
  ``model_vocab_size`` (the CLI reads the latter to size the model before training starts;
  ``TokenizerMixin`` does this for every data module);
- ``prepare_data`` (once per node) writes the token caches; ``setup`` (every process) maps them;
- everything on disk is content-addressed, so a rerun with the same settings reads the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from zoo.data import cache
from zoo.data import shards as token_shards
from zoo.data.cleaning import PARAGRAPH_DEDUP_MIN_CHARS, CleaningReport, clean_documents, require_documents
from zoo.data.packing import PackedBlocks
from zoo.data.sampling import evaluation_loader, resumable_loader
from zoo.data.sources import Document, load_documents
from zoo.data.split import split_documents
from zoo.data.tokenized import TokenizerMixin
from zoo.data.tokenizer import TOKENIZER_KINDS, TokenizerKind, load_tokenizer
from zoo.errors import ZooError


class TextDataModule(TokenizerMixin, LightningDataModule):
    """Text corpus for causal language modelling, packed into fixed-length blocks.

    Batches are ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T]}`` with
    ``labels[:, t] == input_ids[:, t + 1]`` (next-token targets; documents joined by the
    end-of-text token). The test split is the validation split unless ``test_source`` is set.

    Args:
        source: Corpus: "pydoc" (the Python documentation topics shipped with Python), a text
            file, a folder, a glob like "texts/**/*.txt", a .jsonl file, or "hf:NAME[:CONFIG]"
            (a Hugging Face dataset; needs `pip install datasets`).
        text_field: Field holding the text in .jsonl records and Hugging Face datasets.
        hf_split: Split to read from a Hugging Face dataset.
        tokenizer: Path to an existing tokenizer.json (or a folder holding one, or a zoo .ckpt
            carrying one) to use instead of training one.
        tokenizer_kind: Tokenizer to train: "bpe" (byte-level, GPT/BART), "wordpiece" (BERT)
            or "unigram" (T5).
        vocab_size: Vocabulary size to train to, special tokens included (the model is sized
            from the tokenizer's actual size, which can be smaller on a small corpus).
        special_tokens: Special tokens for training, in id order; default per kind:
            bpe ["<|endoftext|>", "<pad>"], wordpiece ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
            "[MASK]"], unigram ["<pad>", "</s>", "<unk>", "<extra_id_0>".."<extra_id_99>"].
        block_size: Tokens per example (the context length trained on).
        batch_size: Examples per batch.
        val_fraction: Share of the text (in characters) held out for validation, whole
            documents at a time, chosen by a seeded hash; at least one document.
        min_chars: Documents shorter than this many characters after cleaning are dropped.
        dedup: Drop exact-duplicate documents and exact-duplicate paragraphs.
        seed: Seed of the train/validation split and of the training-batch shuffle.
        num_workers: DataLoader worker processes (0 loads in the main process).
        cache_dir: Folder for tokenizers and token caches; default $ZOO_CACHE_DIR or ~/.cache/zoo.
        test_source: Optional separate corpus for the test split (same forms as `source`).
        shards: A folder written by `zoo data prepare` (opt-in): train on its sharded token files,
            memory-mapped, with its tokenizer; `source` and the cleaning settings are then unused,
            and the test split is its validation split.
    """

    def __init__(
        self,
        source: str = "pydoc",
        text_field: str = "text",
        hf_split: str = "train",
        tokenizer: Optional[str] = None,
        tokenizer_kind: TokenizerKind = "bpe",
        vocab_size: int = 4096,
        special_tokens: Optional[list[str]] = None,
        block_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        min_chars: int = 32,
        dedup: bool = True,
        seed: int = 1234,
        num_workers: int = 0,
        cache_dir: Optional[str] = None,
        test_source: Optional[str] = None,
        shards: Optional[str] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        _check_arguments(tokenizer_kind, vocab_size, block_size, batch_size, val_fraction, num_workers)
        self.source, self.text_field, self.hf_split = source, text_field, hf_split
        self.tokenizer_file = tokenizer
        self.tokenizer_kind, self.vocab_size, self.special_tokens = tokenizer_kind, vocab_size, special_tokens
        self.block_size, self.batch_size, self.num_workers = block_size, batch_size, num_workers
        self.val_fraction, self.min_chars, self.dedup, self.seed = val_fraction, min_chars, dedup, seed
        self.cache_dir, self.test_source, self.shards = cache_dir, test_source, shards
        self._splits: Optional[dict[str, list[Document]]] = None
        self._report: Optional[CleaningReport] = None
        self._token_folder: Optional[Path] = None
        self._tokens: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- documents
    def documents(self, split: str = "train") -> list[Document]:
        """The cleaned ``(id, text)`` documents of "train", "val" or "test" (ids are pydoc topics)."""
        splits = self._documents()
        if split == "test" and "test" not in splits:
            split = "val"
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        return splits[split]

    @property
    def cleaning_report(self) -> CleaningReport:
        """Counts of what cleaning kept and dropped from ``source``."""
        self._documents()
        assert self._report is not None
        return self._report

    def _documents(self) -> dict[str, list[Document]]:
        if self._splits is None:
            docs, self._report = self._clean(self.source)
            train, val = split_documents(docs, self.val_fraction, self.seed)
            self._splits = {"train": train, "val": val}
            rank_zero_info(
                f"data {self.source!r}: {self._report.summary()}; {len(train)} train / {len(val)} val documents"
            )
            if self.test_source is not None:
                self._splits["test"], report = self._clean(self.test_source)
                rank_zero_info(f"data {self.test_source!r} (test): {report.summary()}")
        return self._splits

    def _clean(self, source: str) -> tuple[list[Document], CleaningReport]:
        raw = load_documents(source, self.text_field, self.hf_split)
        docs, report = clean_documents(raw, self.min_chars, self.dedup)
        require_documents(docs, report, source, self.min_chars)
        return docs, report

    # ----------------------------------------------------------------- tokenizer
    def build_tokenizer(self) -> tuple[Tokenizer, Path]:
        """The prepared shards' tokenizer, else one trained on the train split (cached by content)."""
        if self.shards is not None:
            path = token_shards.tokenizer_file(self.shards)
            return load_tokenizer(path), path
        settings = (self.tokenizer_kind, self.vocab_size, self.special_tokens)
        return cache.cached_tokenizer(self.documents("train"), *settings, self._cache_root())

    # ----------------------------------------------------------------- token caches
    def prepare_data(self) -> None:
        """Train or load the tokenizer and write the token caches (a no-op when cached)."""
        self._build_token_files()

    def setup(self, stage: Optional[str] = None) -> None:
        """Map the cached token streams (building them first if ``prepare_data`` did not run)."""
        if not self._tokens and self.shards is not None:
            self._tokens = {name: token_shards.open_split(self.shards, name) for name in ("train", "val")}
        if not self._tokens:
            paths = self._build_token_files()
            self._tokens = {name: cache.open_tokens(path, self.model_vocab_size) for name, path in paths.items()}

    def tokens(self, split: str = "train") -> np.ndarray:
        """The token stream of "train", "val" or "test" as a read-only array."""
        self.setup()
        if split == "test" and "test" not in self._tokens:
            split = "val"
        return self._tokens[split]

    def _build_token_files(self) -> dict[str, Path]:
        if self.shards is not None:  # written by `zoo data prepare`; check they are complete
            return {name: Path(self.shards) for name in token_shards.read_index(self.shards)["splits"]}
        splits = {name: self.documents(name) for name in self._documents()}
        return cache.build_token_files(self._token_cache_folder(), splits, self.tokenizer, self.eos_token_id)

    def _token_cache_folder(self) -> Path:
        if self._token_folder is None:
            cleaning = {"min_chars": self.min_chars, "dedup": self.dedup, "paragraph_min": PARAGRAPH_DEDUP_MIN_CHARS}
            digests = {name: cache.documents_digest(docs) for name, docs in self._documents().items()}
            key = cache.fingerprint(
                "tokens",
                cache.CACHE_VERSION,
                cleaning,
                {"val_fraction": self.val_fraction, "seed": self.seed},
                self.tokenizer.to_str(),
                digests,
            )
            self._token_folder = self._cache_root() / "tokens" / key
        return self._token_folder

    def _cache_root(self) -> Path:
        return cache.resolve_cache_dir(self.cache_dir)

    def __getstate__(self) -> dict:
        # Spawned processes reopen the memmaps in setup(); pickling them would copy every token.
        state = self.__dict__.copy()
        state["_tokens"] = {}
        return state

    # ----------------------------------------------------------------- loaders
    def build_dataset(self, split: str) -> Dataset:
        """The examples of a split; subclasses (masking, span corruption) override this."""
        return PackedBlocks(self.tokens(split), self.block_size, name=split)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.build_dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.build_dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.build_dataset("test"), shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
        if shuffle:  # epoch e reads randperm(seed + e), sharded over ranks, resumable mid-epoch
            return resumable_loader(dataset, self.batch_size, self.seed, self.trainer, **workers)
        return evaluation_loader(dataset, self.batch_size, self.seed, **workers)

    # ----------------------------------------------------------------- baseline
    def unigram_perplexity(self) -> float:
        """Perplexity of an add-one-smoothed unigram model of the train tokens on the val targets.

        The targets are exactly the labels of the validation blocks, so the number compares
        directly with the model's validation perplexity: a model must beat it to have learned
        anything beyond token frequencies.
        """
        counts = np.bincount(np.asarray(self.tokens("train")), minlength=self.model_vocab_size).astype(np.float64)
        log_probs = np.log(counts + 1.0) - np.log(counts.sum() + len(counts))
        targets = PackedBlocks(self.tokens("val"), self.block_size, name="val").targets()
        return float(np.exp(-log_probs[targets.astype(np.int64)].mean()))


def _check_arguments(
    kind: str, vocab_size: int, block_size: int, batch_size: int, val_fraction: float, num_workers: int
) -> None:
    """Catch impossible settings at construction, with the key to change."""
    if kind not in TOKENIZER_KINDS:
        kinds = ", ".join(TOKENIZER_KINDS)
        raise ZooError(f"unknown tokenizer_kind {kind!r}; set --data.tokenizer_kind to one of {kinds}")
    for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("batch_size", batch_size)):
        if value < 1:
            raise ZooError(f"{name}={value} must be at least 1; set --data.{name}")
    if not 0.0 < val_fraction < 1.0:
        raise ZooError(
            f"val_fraction={val_fraction} must lie strictly between 0 and 1; set --data.val_fraction to e.g. 0.1"
        )
    if num_workers < 0:
        raise ZooError(f"num_workers={num_workers} must be 0 or more; set --data.num_workers")
