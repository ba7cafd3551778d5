"""Subword tokenizers, trained with Hugging Face ``tokenizers`` the way each family's paper did.

- ``"bpe"``: byte-level BPE (GPT-2, Radford et al. 2019; also BART). Every byte is in the base
  alphabet, so nothing is ever unknown and ``decode(encode(text)) == text`` exactly.
- ``"wordpiece"``: WordPiece (BERT, Devlin et al. 2018) with BERT's normalizer (cased) and
  pre-tokenizer and a ``[CLS] A [SEP] B [SEP]`` post-processor. BERT's pre-tokenizer drops
  whitespace, so decoding restores the words, not the exact spacing.
- ``"unigram"``: a Unigram LM (Kudo 2018, as SentencePiece does for T5) over ``▁``-marked words
  (Metaspace), with T5's ``<pad> </s> <unk>`` and 100 sentinels ``<extra_id_0..99>``, and an
  ``A </s>`` post-processor.

Special tokens come first in the vocabulary, in the order given (so ``<pad>`` is 0 for T5's
defaults). The end-of-text token that separates packed documents is found by name:
``eos_token_id`` looks for ``<|endoftext|>``, ``</s>``, ``[SEP]`` or ``<eos>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from zoo.errors import ZooError

TokenizerKind = Literal["bpe", "wordpiece", "unigram"]
TOKENIZER_KINDS = ("bpe", "wordpiece", "unigram")
EOS_TOKENS = ("<|endoftext|>", "</s>", "[SEP]", "<eos>")
PAD_TOKENS = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")
UNK_TOKENS = ("<unk>", "[UNK]")


def sentinel_tokens(n: int = 100) -> list[str]:
    """T5's span-corruption sentinels ``<extra_id_0>`` … ``<extra_id_{n-1}>``."""
    return [f"<extra_id_{i}>" for i in range(n)]


def default_special_tokens(kind: TokenizerKind) -> list[str]:
    """The special tokens each family expects, in vocabulary order."""
    if kind == "bpe":
        return ["<|endoftext|>", "<pad>"]
    if kind == "wordpiece":
        return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if kind == "unigram":
        return ["<pad>", "</s>", "<unk>", *sentinel_tokens(100)]
    raise ZooError(f"unknown tokenizer kind {kind!r}; set --data.tokenizer_kind to one of {', '.join(TOKENIZER_KINDS)}")


def train_tokenizer(
    texts: Iterable[str],
    kind: TokenizerKind = "bpe",
    vocab_size: int = 4096,
    special_tokens: list[str] | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a ``kind`` tokenizer of about ``vocab_size`` entries (special tokens included).

    The result can be smaller than asked when the corpus runs out of merges, and a byte-level
    BPE is never smaller than its 256-byte alphabet plus the special tokens.
    """
    specials = list(special_tokens) if special_tokens is not None else default_special_tokens(kind)
    _check_specials(kind, vocab_size, specials)
    if kind == "bpe":
        tokenizer, trainer = _bpe(vocab_size, specials)
    elif kind == "wordpiece":
        tokenizer, trainer = _wordpiece(vocab_size, specials)
    else:
        tokenizer, trainer = _unigram(vocab_size, specials)
    trainer.show_progress = show_progress
    tokenizer.train_from_iterator(texts, trainer)
    _add_post_processor(tokenizer, kind, specials)
    return tokenizer


def _check_specials(kind: str, vocab_size: int, specials: list[str]) -> None:
    if kind not in TOKENIZER_KINDS:
        default_special_tokens(kind)  # raises the ZooError naming the valid kinds
    if vocab_size <= len(specials):
        raise ZooError(
            f"vocab_size={vocab_size} leaves no room beside {len(specials)} special tokens; raise --data.vocab_size"
        )
    if len(set(specials)) != len(specials):
        raise ZooError(f"special_tokens {specials} repeat a token; list each once in --data.special_tokens")
    if not any(tok in specials for tok in EOS_TOKENS):
        raise ZooError(
            f"special_tokens {specials} have no end-of-text token to separate documents; "
            f"add one of {', '.join(EOS_TOKENS)} to --data.special_tokens"
        )
    if kind != "bpe" and not any(tok in specials for tok in UNK_TOKENS):
        raise ZooError(
            f"a {kind} tokenizer needs an unknown-word token; "
            f"add one of {', '.join(UNK_TOKENS)} to --data.special_tokens"
        )


def _unk(specials: list[str]) -> str:
    return next(tok for tok in UNK_TOKENS if tok in specials)


def _bpe(vocab_size: int, specials: list[str]):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns, ever
        show_progress=False,
    )
    return tokenizer, trainer


def _wordpiece(vocab_size: int, specials: list[str]):
    unk = _unk(specials)
    tokenizer = Tokenizer(models.WordPiece(unk_token=unk))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, continuing_subword_prefix="##", show_progress=False
    )
    return tokenizer, trainer


def _unigram(vocab_size: int, specials: list[str]):
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token=_unk(specials), show_progress=False
    )
    return tokenizer, trainer


def _add_post_processor(tokenizer: Tokenizer, kind: str, specials: list[str]) -> None:
    """What ``encode(..., add_special_tokens=True)`` wraps around a text, per family."""
    ids = {tok: tokenizer.token_to_id(tok) for tok in specials}
    if kind == "wordpiece" and {"[CLS]", "[SEP]"} <= ids.keys():
        single, pair, used = "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", ("[CLS]", "[SEP]")
    elif kind == "unigram" and "</s>" in ids:
        single, pair, used = "$A </s>", "$A </s> $B:1 </s>:1", ("</s>",)
    elif kind == "bpe" and {"<s>", "</s>"} <= ids.keys():  # BART's special tokens
        single, pair, used = "<s> $A </s>", "<s> $A </s> </s> $B:1 </s>:1", ("<s>", "</s>")
    else:
        return
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(tok, ids[tok]) for tok in used]
    )


def tokenizer_json_path(path: str | Path) -> Path:
    """``path`` itself, or the ``tokenizer.json`` inside it when it is a folder."""
    file = Path(path).expanduser()
    return file / "tokenizer.json" if file.is_dir() else file


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json``, a folder holding one (like a Hugging Face checkpoint), or a zoo ``.ckpt``
    carrying the tokenizer it was trained with."""
    if str(path).endswith(".ckpt"):
        return _checkpoint_tokenizer(path)
    file = tokenizer_json_path(path)
    if not file.is_file():
        raise ZooError(
            f"tokenizer file {file} does not exist; "
            "pass a tokenizer.json to --data.tokenizer, or leave it unset to train one"
        )
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust side raises a bare Exception with a parse message
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ZooError(
            f"{file} is not a valid tokenizers JSON file ({reason}); pass a tokenizer.json saved by "
            "`tokenizers` or Hugging Face, or leave --data.tokenizer unset to train one"
        ) from err


def _checkpoint_tokenizer(path: str | Path) -> Tokenizer:
    from zoo.checkpoint import read_checkpoint  # torch-heavy; only when a checkpoint is named

    stored = (read_checkpoint(path).get("zoo") or {}).get("tokenizer")
    if not stored:
        raise ZooError(f"checkpoint {path} carries no tokenizer; pass its tokenizer.json to --data.tokenizer")
    return Tokenizer.from_str(stored)


def special_token_id(tokenizer: Tokenizer, candidates: Iterable[str]) -> int | None:
    """The id of the first of ``candidates`` the tokenizer knows, else None."""
    for token in candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


def eos_token_id(tokenizer: Tokenizer) -> int:
    """The end-of-text id used to separate packed documents; a ZooError if there is none."""
    token_id = special_token_id(tokenizer, EOS_TOKENS)
    if token_id is None:
        raise ZooError(
            f"the tokenizer has no end-of-text token (one of {', '.join(EOS_TOKENS)}) to separate documents; "
            "use a tokenizer that has one or leave --data.tokenizer unset to train one"
        )
    return token_id


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The padding id; the end-of-text id when the tokenizer has no pad token (as GPT-2 does)."""
    token_id = special_token_id(tokenizer, PAD_TOKENS)
    return token_id if token_id is not None else eos_token_id(tokenizer)
