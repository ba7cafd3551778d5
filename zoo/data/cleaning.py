"""Corpus cleaning: normalize text, drop duplicates and scraps, and count what happened.

The rules follow the usual pre-training recipe (e.g. the C4 / Gopher cleaning passes, much
reduced): Unicode NFC, control characters removed (``\\n`` and ``\\t`` kept), whitespace
normalized, exact-duplicate documents and paragraphs removed by hash, and a minimum length.

One deliberate departure: runs of spaces are collapsed only *inside* a line. Leading
indentation is kept, because the default corpus is Python documentation and its code examples
mean something only when indented.

``clean_documents`` returns the kept documents and a ``CleaningReport`` of counts, which the
DataModule prints so a user sees how much of their corpus survived.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass

from zoo.data.sources import Document
from zoo.errors import ZooError

# Paragraphs shorter than this are boilerplate ("Note:", "For example:") that repeats
# legitimately; removing repeats would cut sentences off from what they introduce.
PARAGRAPH_DEDUP_MIN_CHARS = 64

_LINE_BREAKS = re.compile(r"\r\n?|[\x85\u2028\u2029]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # category Cc minus \t and \n
_ODD_SPACE = re.compile(r"[^\S\n\t ]")  # no-break, ideographic, ... spaces
_INNER_SPACES = re.compile(r"(?<=\S) {2,}")  # a run after text, so indentation survives
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass
class CleaningReport:
    """What cleaning did to a corpus, in documents, paragraphs and characters."""

    docs_in: int = 0
    docs_out: int = 0
    dropped_empty: int = 0  # nothing left after normalizing (or after removing duplicate paragraphs)
    dropped_short: int = 0  # fewer than min_chars characters
    duplicate_docs: int = 0
    duplicate_paragraphs: int = 0  # removed from documents that were kept
    chars_in: int = 0
    chars_out: int = 0

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.docs_in} docs in -> {self.docs_out} kept ({self.dropped_empty} empty, "
            f"{self.dropped_short} too short, {self.duplicate_docs} duplicate docs dropped; "
            f"{self.duplicate_paragraphs} duplicate paragraphs removed); "
            f"{self.chars_in:,} -> {self.chars_out:,} chars"
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def normalize_text(text: str) -> str:
    """NFC, control characters out, whitespace tidy, at most one blank line between paragraphs."""
    text = unicodedata.normalize("NFC", text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _ODD_SPACE.sub(" ", text)
    text = _INNER_SPACES.sub(" ", text)
    text = _TRAILING.sub("", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs of a normalized text (blank-line separated, none empty)."""
    return [p for p in text.split("\n\n") if p.strip()]


def text_hash(text: str) -> bytes:
    """A stable content hash (exact duplicates only)."""
    return hashlib.sha1(text.encode("utf-8")).digest()


def clean_documents(
    docs: list[Document],
    min_chars: int = 32,
    dedup: bool = True,
    paragraph_dedup_min_chars: int = PARAGRAPH_DEDUP_MIN_CHARS,
) -> tuple[list[Document], CleaningReport]:
    """Normalize, deduplicate (documents, then paragraphs across the corpus) and length-filter.

    The first occurrence of a duplicate wins, so the result depends only on document order.
    """
    report = CleaningReport(docs_in=len(docs))
    seen_docs: set[bytes] = set()
    seen_paragraphs: set[bytes] = set()
    kept: list[Document] = []
    for doc in docs:
        report.chars_in += len(doc.text)
        text = normalize_text(doc.text)
        fresh, dropped = set(), 0
        if dedup and text:
            digest = text_hash(text)
            if digest in seen_docs:
                report.duplicate_docs += 1
                continue
            seen_docs.add(digest)
            text, fresh, dropped = _drop_seen_paragraphs(text, seen_paragraphs, paragraph_dedup_min_chars)
        if not text:
            report.dropped_empty += 1
            continue
        if len(text) < min_chars:
            report.dropped_short += 1
            continue
        seen_paragraphs.update(fresh)  # only kept documents claim their paragraphs
        report.duplicate_paragraphs += dropped
        kept.append(Document(doc.id, text))
        report.chars_out += len(text)
    report.docs_out = len(kept)
    return kept, report


def _drop_seen_paragraphs(text: str, seen: set[bytes], min_chars: int) -> tuple[str, set[bytes], int]:
    """``text`` without paragraphs already seen; the hashes of those it keeps; how many it dropped."""
    kept, fresh, dropped = [], set(), 0
    for paragraph in split_paragraphs(text):
        if len(paragraph) >= min_chars:
            digest = text_hash(paragraph)
            if digest in seen or digest in fresh:
                dropped += 1
                continue
            fresh.add(digest)
        kept.append(paragraph)
    return "\n\n".join(kept), fresh, dropped


def require_documents(docs: list[Document], report: CleaningReport, source: str, min_chars: int) -> None:
    """A ZooError when cleaning left nothing to train on, saying why and what to change."""
    if docs:
        return
    if report.docs_in == 0:
        raise ZooError(f"data source {source!r} holds no documents; add text to it or point --data.source elsewhere")
    if report.dropped_empty == report.docs_in:
        raise ZooError(f"data source {source!r} is empty (no text in its {report.docs_in} document(s)); "
                       "add text to it or point --data.source elsewhere")
    raise ZooError(
        f"data source {source!r} is empty after cleaning ({report.docs_in} docs in: {report.dropped_empty} empty, "
        f"{report.dropped_short} shorter than min_chars={min_chars}, {report.duplicate_docs} duplicates); "
        "add text or lower --data.min_chars"
    )
