"""Deterministic train/validation splits: of a document list, and stratified by label.

``split_documents`` (text corpora): documents are ranked by a stable hash of (seed, id, text)
and taken into validation in that order until they hold ``val_fraction`` of the corpus's
characters. Counting characters rather than documents matters when document sizes vary a lot
(the pydoc topics range from 200 to 62,000 characters): the validation loss then averages over
a predictable share of the text. The split depends only on the documents and the seed, never on
their order, the process or the machine, so every DDP rank and every rerun agrees on it. At
least one document lands on each side.

``stratified_split`` (labelled examples: classification rows, images): every label is split in
the same proportion, so validation sees each class as often as training does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import Literal, Optional, Union

import torch

from zoo.data.cleaning import split_paragraphs
from zoo.data.sources import Document
from zoo.errors import ZooError

# A lone document (one big text file) is cut into about this many contiguous pieces to split:
# enough to hold out ~val_fraction of it, few enough that end-of-text separators stay rare.
SINGLE_DOCUMENT_PIECES = 100


def split_documents(
    docs: list[Document], val_fraction: float = 0.1, seed: int = 1234
) -> tuple[list[Document], list[Document]]:
    """(train, validation), each in the input order.

    A corpus of one document (a single text file) is first cut into contiguous pieces at
    paragraph (or failing that, line) boundaries, so that there is something to hold out.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ZooError(
            f"val_fraction={val_fraction} must lie strictly between 0 and 1; set --data.val_fraction to e.g. 0.1"
        )
    if len(docs) == 1:
        docs = _pieces(docs[0])
    if len(docs) < 2:
        raise ZooError("the corpus has a single one-line document; a validation split needs at least two, so add text")
    target = val_fraction * sum(len(doc.text) for doc in docs)
    ranked = sorted(range(len(docs)), key=lambda i: (unit_hash(seed, docs[i].id, docs[i].text), i))
    held_out, chars = set(), 0
    for i in ranked[:-1]:  # the last-ranked document always stays in train
        if held_out and chars >= target:
            break
        held_out.add(i)
        chars += len(docs[i].text)
    train = [doc for i, doc in enumerate(docs) if i not in held_out]
    val = [doc for i, doc in enumerate(docs) if i in held_out]
    return train, val


def unit_hash(seed: int, *parts: str, byteorder: Literal["big", "little"] = "big") -> float:
    """A number in [0, 1) fixed by the seed and the parts; sha256, so stable across processes and machines.

    Either ``byteorder`` gives a uniform number; "little" is what classification splits were first
    made with, kept so that they (and the embedded task's paragraphs) stay the same.
    """
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], byteorder) / 2**64


def stratified_split(
    labels: Union[Sequence[Hashable], torch.Tensor],
    val_fraction: float,
    seed: int,
    scores: Optional[Sequence[float]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) into ``labels``, each ascending, every label split alike.

    Label by label (in sorted order), the members are ranked and the first
    ``round(val_fraction * n)`` held out: at least one, never all, none of a lone member.

    Args:
        labels: one label per example.
        val_fraction: share of each label held out.
        seed: seed of the ranking when ``scores`` is None.
        scores: one number per example (e.g. a seeded ``unit_hash`` of its text); members are
            ranked by it, ties by position, so the split depends on content, not order. None
            ranks each label by a seeded ``torch.randperm``, one generator drawn label after label.
    """
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    generator = torch.Generator().manual_seed(seed)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(set(labels)):
        members = [i for i, other in enumerate(labels) if other == label]
        if scores is None:
            members = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        else:
            members.sort(key=lambda i: (scores[i], i))
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val += members[:n_val]
        train += members[n_val:]
    return torch.tensor(sorted(train), dtype=torch.long), torch.tensor(sorted(val), dtype=torch.long)


def _pieces(doc: Document, count: int = SINGLE_DOCUMENT_PIECES) -> list[Document]:
    """About ``count`` contiguous runs of paragraphs (or lines) of one long document."""
    units, sep = split_paragraphs(doc.text), "\n\n"
    if len(units) < 2:
        units, sep = [line for line in doc.text.splitlines() if line.strip()], "\n"
    size = max(1, len(doc.text) // count)
    pieces, run, chars = [], [], 0
    for unit in units:
        run.append(unit)
        chars += len(unit)
        if chars >= size:
            pieces.append(sep.join(run))
            run, chars = [], 0
    if run:
        pieces.append(sep.join(run))
    return [Document(f"{doc.id}#{i}", piece) for i, piece in enumerate(pieces)]
