"""The zoo's own datatrove pipeline steps; everything else in the pipeline is datatrove's.

- ``PydocReader`` / ``TextFilesReader``: the embedded corpus and plain-text files, shared out
  over the tasks (datatrove reads JSONL, Parquet and Hugging Face datasets itself).
- ``NormalizeText``: ``zoo.data.cleaning.normalize_text`` and the minimum length, as a filter.
- ``PIIScrubber``: e-mail and IP addresses (datatrove's patterns) and phone numbers replaced by
  placeholders, counted by kind.
- ``DocStats``: length and duplicate-cluster histograms, summed over tasks by datatrove's stats.
- ``RankJsonlReader``: task ``r`` reads exactly the file task ``r`` of an earlier stage wrote,
  which is what MinHash's last stage needs (it removes documents by their index in that file).
- ``ShardTokenizer``: the zoo tokenizer over the documents, into ``train/`` and ``val/`` shards.
- ``RegexWordTokenizer``: the word and sentence splitter the Gopher, C4 and MinHash steps use;
  datatrove's English default is spaCy, a large dependency for splitting on spaces.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.pii import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.utils.tokenization import PipelineStepWithTokenizer
from datatrove.utils.word_tokenizers import WordTokenizer

from zoo.data.cleaning import normalize_text
from zoo.data.pipeline.config import PIIConfig
from zoo.data.sources import pydoc_documents, read_text_file, text_files

# North-American (555) 123-4567 / 555-123-4567 and international +CC forms; digits only in groups,
# so dates (2024-01-31), versions (3.11.4) and IPv4 addresses (scrubbed first) do not match.
PHONE_PATTERN = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"
    r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})(?![\w-])"
)
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n{2,}")
LENGTH_BINS = 24  # log2 bins: bin k holds lengths in [2^k, 2^(k+1))


def length_bin(n: int) -> int:
    return min(LENGTH_BINS - 1, int(math.log2(n)) if n > 0 else 0)


class RegexWordTokenizer(WordTokenizer):
    """Words are runs of letters/digits (with inner apostrophes) or runs of punctuation."""

    def __init__(self):
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for match in _SENTENCE_END.finditer(text):
            if text[start : match.start()].strip():
                spans.append((start, match.start()))
            start = match.end()
        if text[start:].strip():
            spans.append((start, len(text)))
        return spans

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.span_tokenize(text)]


WORDS = RegexWordTokenizer()


class PydocReader(PipelineStep):
    """The Python documentation topics (``pydoc_data``), every ``world_size``-th one per task."""

    type, name = "📖 - READER", "🐍 pydoc"

    def __init__(self, limit: int = -1):
        super().__init__()
        self.limit = limit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        docs = pydoc_documents()[rank::world_size]
        for doc in docs if self.limit < 0 else docs[: self.limit]:
            document = Document(text=doc.text, id=f"pydoc/{doc.id}")
            self.update_doc_stats(document)
            yield document


class TextFilesReader(PipelineStep):
    """A text file, a folder or a glob: one document per file, files shared out over the tasks."""

    type, name = "📖 - READER", "📄 text files"

    def __init__(self, source: str, limit: int = -1):
        super().__init__()
        self.source, self.limit = source, limit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = text_files(self.source)[rank::world_size]
        for path in files if self.limit < 0 else files[: self.limit]:
            document = Document(text=read_text_file(path), id=path.as_posix())
            self.update_doc_stats(document)
            yield document


class RankJsonlReader(JsonlReader):
    """Task ``r`` reads ``{r:05d}.jsonl.gz`` only (written by task ``r`` of the previous stage)."""

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        name = f"{rank:05d}.jsonl.gz"
        if self.data_folder.exists(name):
            for doc in self.read_files_shard([name]):
                self.update_doc_stats(doc)
                yield doc


class NormalizeText(BaseFilter):
    """The zoo's cleaning: ``normalize_text`` (NFC, controls, whitespace), then a minimum length."""

    name = "🧼 zoo normalize"

    def __init__(self, normalize: bool = True, min_chars: int = 32, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.normalize, self.min_chars = normalize, min_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        self.stat_update("chars_in", value=len(doc.text))
        if self.normalize:
            doc.text = normalize_text(doc.text)
        if not doc.text.strip():
            return False, "empty"
        if len(doc.text) < self.min_chars:
            return False, "too_short"
        return True


class PIIScrubber(PIIFormatter):
    """E-mail, IPv4 and phone numbers replaced by placeholders; ``pii_<kind>`` counts replacements."""

    name = "📞 zoo PII"

    def __init__(self, config: PIIConfig):
        super().__init__(remove_emails=config.emails, remove_ips=config.ips,
                         only_remove_public_ips=config.only_public_ips)
        self.config = config

    def format(self, text: str) -> str:
        cfg = self.config
        if cfg.emails:
            text = self._scrub("email", self.emails_replacer.regex, text, cfg.email_placeholder)
        if cfg.ips:
            text = self._scrub("ip", self.ip_replacer.regex, text, cfg.ip_placeholder, self.ip_replacer.validator)
        if cfg.phones:
            text = self._scrub("phone", PHONE_PATTERN, text, cfg.phone_placeholder)
        return text

    def _scrub(self, kind: str, pattern: re.Pattern, text: str, placeholder: str, valid=None) -> str:
        count = 0

        def replace(match: re.Match) -> str:
            nonlocal count
            if valid is not None and not valid(match.group(0)):
                return match.group(0)
            count += 1
            return placeholder

        text = pattern.sub(replace, text)
        if count:
            self.stat_update(f"pii_{kind}", value=count)
        return text


class DocStats(PipelineStep):
    """Counts per document: characters (log2 histogram) and the size of its MinHash cluster."""

    type, name = "📊 - STATS", "📊 zoo doc stats"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("docs")
            self.stat_update("chars", value=len(doc.text))
            self.stat_update(f"chars_bin_{length_bin(len(doc.text)):02d}")
            size = doc.metadata.get("minhash_cluster_size", 1)
            if size > 1:  # the one document kept of a cluster: one count per cluster
                self.stat_update(f"cluster_size_{size}")
            yield doc


def in_validation(text: str, fraction: float, seed: int) -> bool:
    """A seeded hash of the text decides, so every task and every rerun agrees."""
    digest = hashlib.blake2b(f"{seed}\0{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class ShardTokenizer(PipelineStepWithTokenizer):
    """Documents → ``{split}/{rank:05d}.bin``: token ids, end-of-text after each document.

    The file format is the zoo's token cache's (``zoo.data.cache``): flat uint16 (uint32 above
    65,536 tokens), memory-mapped by ``zoo.data.shards``.
    """

    type, name = "🔢 - TOKENIZER", "🔢 zoo shards"

    def __init__(self, output_folder: str, tokenizer_path: str, eos_id: int, val_fraction: float, seed: int,
                 batch_size: int = 1000):
        super().__init__(tokenizer_path)
        from datatrove.io import get_datafolder

        self.output_folder = get_datafolder(output_folder)
        self.eos_id, self.val_fraction, self.seed, self.batch_size = eos_id, val_fraction, seed, batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tok = self.tokenizer
        tok.no_padding()
        tok.no_truncation()
        dtype = np.uint32 if self.token_size == 4 else np.uint16
        files = {split: self.output_folder.open(f"{split}/{rank:05d}.bin", mode="wb") for split in ("train", "val")}
        try:
            for batch in _batches(data, self.batch_size):
                with self.track_time("batch"):
                    encodings = tok.encode_batch([doc.text for doc in batch], add_special_tokens=False)
                for doc, enc in zip(batch, encodings):
                    split = "val" if in_validation(doc.text, self.val_fraction, self.seed) else "train"
                    ids = np.asarray(enc.ids + [self.eos_id], dtype=dtype)
                    files[split].write(ids.tobytes())
                    self.stat_update(f"docs_{split}")
                    self.stat_update(f"tokens_{split}", value=len(ids))
                    self.stat_update(f"tokens_bin_{length_bin(len(ids)):02d}")
                    yield doc
        finally:
            for f in files.values():
                f.close()


def _batches(data: DocumentsPipeline, size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in data or ():
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
