"""The train/validation split: deterministic, order-independent, seedable, never one-sided."""

import random

import pytest

from zoo.data.sources import Document
from zoo.data.split import split_documents
from zoo.errors import ZooError


def docs_of(n: int, size: int = 50) -> list[Document]:
    return [Document(f"doc{i}", f"document number {i} ".ljust(size, "x")) for i in range(n)]


def ids(docs):
    return [d.id for d in docs]


def test_split_is_deterministic_and_order_independent():
    docs = docs_of(60)
    train, val = split_documents(docs, 0.2, seed=7)
    again = split_documents(docs, 0.2, seed=7)
    assert (ids(train), ids(val)) == (ids(again[0]), ids(again[1]))
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert set(ids(split_documents(shuffled, 0.2, seed=7)[1])) == set(ids(val))
    assert sorted(ids(train) + ids(val)) == sorted(ids(docs))
    assert ids(train) == [i for i in ids(docs) if i in set(ids(train))]  # input order kept


def test_seed_changes_the_split():
    docs = docs_of(60)
    splits = {tuple(ids(split_documents(docs, 0.2, seed=s)[1])) for s in range(5)}
    assert len(splits) > 1


def test_val_fraction_counts_characters():
    docs = docs_of(100)
    _, val = split_documents(docs, 0.2)
    assert len(val) == 20  # equal-size documents: 20% of the text is 20 documents
    big = [Document("big", "y" * 10_000)] + docs_of(100)
    _, val = split_documents(big, 0.3)
    assert sum(len(d.text) for d in val) >= 0.3 * sum(len(d.text) for d in big)


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_at_least_one_document_each_side(fraction):
    train, val = split_documents(docs_of(2), fraction)
    assert len(train) == 1 and len(val) == 1


def test_single_document_is_cut_into_contiguous_pieces():
    text = "\n\n".join(f"Paragraph {i} of the only document." for i in range(300))
    train, val = split_documents([Document("book.txt", text)], 0.1)
    assert train and val
    pieces = sorted(train + val, key=lambda d: int(d.id.split("#")[1]))
    assert all(d.id.startswith("book.txt#") for d in pieces)
    assert "\n\n".join(d.text for d in pieces) == text
    assert len(pieces) <= 101


def test_single_line_document_cannot_be_split():
    with pytest.raises(ZooError, match="validation split needs at least two"):
        split_documents([Document("one", "just one line")], 0.1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_bad_val_fraction(fraction):
    with pytest.raises(ZooError, match="val_fraction"):
        split_documents(docs_of(5), fraction)
