"""Text data: corpus sources, cleaning, split, tokenizers, token caches, packing, DataModules.

The pipeline, one module per stage: ``sources`` (where documents come from) → ``cleaning``
(normalize, dedup, filter) → ``split`` (deterministic train/val, stratified by label) →
``tokenizer`` (BPE, WordPiece, Unigram) → ``cache`` (content-addressed token files) →
``packing`` (next-token blocks) → ``text.TextDataModule`` (the Lightning face of it all).
``tokenized.TokenizerMixin`` gives every data module its tokenizer the same way; ``pretraining``
(MLM, span corruption, text infilling), ``classification``, ``instructions`` (packed chat
examples for instruction tuning) and ``images`` build on it.
"""

from zoo.data.classification import ClassificationDataModule
from zoo.data.cleaning import CleaningReport, clean_documents, normalize_text, split_paragraphs
from zoo.data.images import ImageTextDataModule
from zoo.data.instructions import InstructionDataModule
from zoo.data.packing import PackedBlocks
from zoo.data.pretraining import MaskedLMDataModule, SpanCorruptionDataModule, TextInfillingDataModule
from zoo.data.sources import Document, load_documents, pydoc_documents
from zoo.data.split import split_documents, stratified_split
from zoo.data.text import TextDataModule
from zoo.data.tokenized import TokenizerMixin
from zoo.data.tokenizer import (
    TokenizerKind,
    default_special_tokens,
    eos_token_id,
    load_tokenizer,
    pad_token_id,
    sentinel_tokens,
    train_tokenizer,
)

__all__ = [
    "ClassificationDataModule",
    "CleaningReport",
    "Document",
    "ImageTextDataModule",
    "InstructionDataModule",
    "MaskedLMDataModule",
    "PackedBlocks",
    "SpanCorruptionDataModule",
    "TextDataModule",
    "TextInfillingDataModule",
    "TokenizerKind",
    "TokenizerMixin",
    "clean_documents",
    "default_special_tokens",
    "eos_token_id",
    "load_documents",
    "load_tokenizer",
    "normalize_text",
    "pad_token_id",
    "pydoc_documents",
    "sentinel_tokens",
    "split_documents",
    "split_paragraphs",
    "stratified_split",
    "train_tokenizer",
]
