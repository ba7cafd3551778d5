"""The typed schema of a data-pipeline YAML (``configs/data/*.yaml``).

Every key is a field of one of these dataclasses; ``zoo data prepare --print_config`` shows them
all. The filter sections carry datatrove's own argument names, so a threshold in the YAML is the
threshold of the datatrove class it configures (e.g. ``gopher_quality.min_doc_words`` is
``GopherQualityFilter(min_doc_words=...)``). A section set to ``null`` turns that stage off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

InputFormat = Literal["auto", "pydoc", "text", "jsonl", "parquet", "hf"]


@dataclass
class InputSpec:
    """One corpus to read.

    Args:
        source: "pydoc", a text file, a folder, a glob ("texts/**/*.txt"), a .jsonl(.gz/.zst) or
            .parquet file or folder of them, or "hf:NAME[:CONFIG]" (streamed; needs network).
        format: how to read it; "auto" decides from the source (suffix, "hf:" prefix, "pydoc").
        text_key: field holding the text (JSONL, Parquet, Hugging Face).
        id_key: field holding the document id.
        hf_split: split of a Hugging Face dataset.
        limit: read at most this many documents per task (-1: all).
    """

    source: str = "pydoc"
    format: InputFormat = "auto"
    text_key: str = "text"
    id_key: str = "id"
    hf_split: str = "train"
    limit: int = -1


@dataclass
class CleanConfig:
    """The zoo's own cleaning (``zoo.data.cleaning.normalize_text``) as a pipeline stage.

    Args:
        normalize: NFC, control characters out, whitespace tidied (indentation kept).
        min_chars: documents shorter than this after normalizing are dropped.
    """

    normalize: bool = True
    min_chars: int = 32


@dataclass
class GopherRepetitionConfig:
    """``GopherRepetitionFilter`` (Rae et al. 2021, table A1): duplicated lines, paragraphs and n-grams."""

    dup_line_frac: Optional[float] = 0.3
    dup_para_frac: Optional[float] = 0.3
    dup_line_char_frac: Optional[float] = 0.2
    dup_para_char_frac: Optional[float] = 0.2
    top_n_grams: list[tuple[int, float]] = field(default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)])
    dup_n_grams: list[tuple[int, float]] = field(
        default_factory=lambda: [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])


@dataclass
class GopherQualityConfig:
    """``GopherQualityFilter`` (Rae et al. 2021): word counts and lengths, symbols, bullets, stop words."""

    min_doc_words: Optional[int] = 50
    max_doc_words: Optional[int] = 100000
    min_avg_word_length: Optional[int] = 3
    max_avg_word_length: Optional[int] = 10
    max_symbol_word_ratio: Optional[float] = 0.1
    max_bullet_lines_ratio: Optional[float] = 0.9
    max_ellipsis_lines_ratio: Optional[float] = 0.3
    max_non_alpha_words_ratio: Optional[float] = 0.8
    min_stop_words: Optional[int] = 2


@dataclass
class C4Config:
    """``C4QualityFilter`` (Raffel et al. 2020): line rules (terminal punctuation, words per line,
    javascript, policy boilerplate) and page rules (lorem ipsum, curly brackets, sentence count)."""

    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@dataclass
class LanguageConfig:
    """``LanguageFilter`` (fastText lid.176). Runs only when fasttext is installed and the model is
    already in datatrove's asset cache; otherwise the stage is skipped with one line (no download)."""

    languages: list[str] = field(default_factory=lambda: ["en"])
    language_threshold: float = 0.65


@dataclass
class MinhashSettings:
    """MinHash + LSH near-duplicate removal (Broder 1997; datatrove's four MinHash stages).

    ``num_buckets`` bands of ``hashes_per_bucket`` rows: a pair of Jaccard similarity s is found
    with probability 1 - (1 - s^rows)^bands (14 x 8: 0.92 at s = 0.8, 0.5 at s ~ 0.72).

    Args:
        n_grams: shingle size in words.
        num_buckets: LSH bands.
        hashes_per_bucket: rows per band.
        seed: seed of the hash permutations (the same on every machine).
        hash_fc: "xxhash" (fast) or "sha1".
    """

    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    hash_fc: Literal["xxhash", "sha1"] = "xxhash"


@dataclass
class PIIConfig:
    """PII scrubbing: each kind replaced by a fixed placeholder, and counted.

    Args:
        emails: e-mail addresses -> ``email_placeholder``.
        ips: IPv4 addresses -> ``ip_placeholder`` (all of them when ``only_public_ips`` is false).
        phones: phone numbers (international +CC and North-American forms) -> ``phone_placeholder``.
    """

    emails: bool = True
    ips: bool = True
    only_public_ips: bool = False
    phones: bool = True
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP_ADDRESS>"
    phone_placeholder: str = "<PHONE>"


@dataclass
class TokenizeConfig:
    """Tokenization into shards: ``train/NNNNN.bin`` and ``val/NNNNN.bin``, one pair per task.

    Args:
        tokenizer: an existing tokenizer.json (or folder holding one); None trains a zoo tokenizer
            on a sample of the filtered text (``sample_chars``), saved as ``tokenizer.json``.
        kind: tokenizer to train ("bpe", "wordpiece", "unigram").
        vocab_size: its size, special tokens included.
        special_tokens: its special tokens (default per kind, see TextDataModule).
        sample_chars: characters of filtered text the tokenizer is trained on (bounded memory).
        val_fraction: share of documents held out for validation (a seeded hash of the text).
        seed: seed of that hash.
    """

    tokenizer: Optional[str] = None
    kind: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    vocab_size: int = 4096
    special_tokens: Optional[list[str]] = None
    sample_chars: int = 20_000_000
    val_fraction: float = 0.05
    seed: int = 1234
