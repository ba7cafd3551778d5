"""Shared fixtures for the data tests: small deterministic corpora written to tmp folders."""

import random
from pathlib import Path

import pytest

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "qua", "dor", "pel", "shi", "bra", "gum"]


def make_text(rng: random.Random, paragraphs: int = 4) -> str:
    """Prose-like text: words from a few syllables, sentences, paragraphs, some punctuation."""
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(120)]
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
            sentences.append(sentence.capitalize() + rng.choice([".", ".", "!", "?", ":"]))
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def write_corpus(folder: Path, n_docs: int = 40, seed: int = 0) -> list[str]:
    """``n_docs`` text files doc000.txt... under ``folder``; returns their texts."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n_docs):
        text = make_text(rng, paragraphs=rng.randint(2, 6))
        (folder / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A folder of 40 small synthetic documents."""
    folder = tmp_path / "corpus"
    write_corpus(folder)
    return folder


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def corpus_writer():
    """``write_corpus(folder, n_docs, seed)``, for tests that need a corpus of their own."""
    return write_corpus


@pytest.fixture
def text_maker():
    """``make_text(rng, paragraphs)``, for tests that need prose."""
    return make_text
