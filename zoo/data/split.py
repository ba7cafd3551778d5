"""Deterministic train/validation split of a document list.

Documents are ranked by a stable hash of (seed, id, text) and taken into validation in that
order until they hold ``val_fraction`` of the corpus's characters. Counting characters rather
than documents matters when document sizes vary a lot (the pydoc topics range from 200 to
62,000 characters): the validation loss then averages over a predictable share of the text.
The split depends only on the documents and the seed, never on their order, the process or
the machine, so every DDP rank and every rerun agrees on it. At least one document lands on
each side.
"""

from __future__ import annotations

import hashlib

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
    ranked = sorted(range(len(docs)), key=lambda i: (_unit_hash(seed, docs[i]), i))
    held_out, chars = set(), 0
    for i in ranked[:-1]:  # the last-ranked document always stays in train
        if held_out and chars >= target:
            break
        held_out.add(i)
        chars += len(docs[i].text)
    train = [doc for i, doc in enumerate(docs) if i not in held_out]
    val = [doc for i, doc in enumerate(docs) if i in held_out]
    return train, val


def _unit_hash(seed: int, doc: Document) -> float:
    """A number in [0, 1) fixed by the seed and the document; sha256 so it is stable across runs."""
    digest = hashlib.sha256(f"{seed}\0{doc.id}\0{doc.text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


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
