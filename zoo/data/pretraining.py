"""Pre-training data for encoders and encoder-decoders: ``TextDataModule``'s token stream, cut into
fixed-length chunks and noised on the fly by the objectives of ``zoo.data.noising``.

- ``MaskedLMDataModule`` (BERT, Devlin et al. 2019): ``[CLS] chunk [SEP]`` with dynamic token or
  whole-word masking (the whole-word variant of the google-research/bert repository).
- ``SpanCorruptionDataModule`` (T5, Raffel et al. 2020): chunks of the raw length that
  ``random_spans_helper`` computes, so every input has exactly ``block_size`` tokens.
- ``TextInfillingDataModule`` (BART, Lewis et al. 2020): sentence permutation, then text infilling.

Noise is a function of ``(seed, epoch, example index)``: validation batches are the same at every
evaluation (so losses compare across steps and runs), training batches get a fresh mask each epoch
(RoBERTa's dynamic masking), and neither depends on the number of DataLoader workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.data import noising
from zoo.data.packing import PackedBlocks
from zoo.data.sampling import resumable_loader
from zoo.data.text import TextDataModule
from zoo.data.tokenizer import TokenizerKind
from zoo.errors import ZooError

BART_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # fairseq's ids 0, 1, 2, 3 first


def example_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixing the three numbers (a hash, so nearby examples are unrelated)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class NoisedChunks(Dataset):
    """Non-overlapping ``chunk_length`` slices of a token stream, each passed through ``noise``.

    Keys ``epoch · len(self) + i`` (see ``EpochSampler``) give example ``i`` noised for that epoch;
    plain indices ``0 … len-1`` are epoch 0, which is what validation reads.
    """

    __getstate__ = PackedBlocks.__getstate__  # memmaps reopen in spawned workers instead of copying
    __setstate__ = PackedBlocks.__setstate__

    def __init__(self, tokens: np.ndarray, chunk_length: int, noise: Callable[[Tensor, torch.Generator], dict],
                 seed: int = 0, name: str = "train"):
        self.tokens, self.chunk_length, self.noise, self.seed, self.name = tokens, chunk_length, noise, seed, name
        if len(self) == 0:
            raise ZooError(
                f"the {name} split has only {len(tokens)} tokens, too few for one example of {chunk_length}; "
                "lower --data.block_size, raise --data.val_fraction or add text"
            )

    def __len__(self) -> int:
        return len(self.tokens) // self.chunk_length

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        epoch, index = divmod(int(key), len(self))
        start = index * self.chunk_length
        chunk = torch.from_numpy(np.asarray(self.tokens[start : start + self.chunk_length], dtype=np.int64))
        return self.noise(chunk, torch.Generator().manual_seed(example_seed(self.seed, epoch, index)))


class EpochSampler(Sampler[int]):
    """Shuffled keys ``epoch · n + i``: Lightning calls ``set_epoch``, the dataset reads the epoch off the key."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.arange(self.n)
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        yield from (self.epoch * self.n + order).tolist()


# --------------------------------------------------------------------------- objectives
@dataclass
class MaskedLMNoise:
    """``[CLS] chunk [SEP]`` → ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``."""

    cls_id: int
    sep_id: int
    mask_id: int
    special_ids: list[int]
    vocab_size: int
    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    word_starts: Optional[Tensor] = None  # per-vocabulary table; set for whole-word masking

    def __call__(self, chunk: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        ids = torch.cat([torch.tensor([self.cls_id]), chunk, torch.tensor([self.sep_id])])
        words = noising.word_ids_from_starts(ids, self.word_starts) if self.word_starts is not None else None
        inputs, labels = noising.mask_tokens(
            ids, self.mask_id, self.special_ids, self.vocab_size, self.probability,
            self.mask_fraction, self.random_fraction, word_ids=words, generator=generator,
        )
        ones = torch.ones_like(ids)
        return {"input_ids": inputs, "attention_mask": ones, "token_type_ids": torch.zeros_like(ids), "labels": labels}


@dataclass
class SpanCorruptionNoise:
    """A raw chunk → ``input_ids`` (padded to ``inputs_length``), ``attention_mask``, ``labels``."""

    sentinel_ids: list[int]
    eos_id: int
    pad_id: int
    inputs_length: int
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    def __call__(self, chunk: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        inputs, targets = noising.span_corruption(
            chunk, self.sentinel_ids, self.eos_id, self.noise_density, self.mean_noise_span_length, generator
        )
        # random_spans_helper can land one short of the length asked for: pad, masked out.
        padding = self.inputs_length - len(inputs)
        mask = torch.cat([torch.ones_like(inputs), torch.zeros(padding, dtype=torch.long)])
        inputs = torch.cat([inputs, torch.full((padding,), self.pad_id)])
        return {"input_ids": inputs, "attention_mask": mask, "labels": targets}


@dataclass
class TextInfillingNoise:
    """A raw chunk → ``<s> noised </s>`` (padded) and labels ``<s> chunk </s>``."""

    bos_id: int
    eos_id: int
    pad_id: int
    mask_id: int
    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    ends_sentence: Optional[Tensor] = None  # per-vocabulary tables; set to permute sentences
    starts_word: Optional[Tensor] = None

    def __call__(self, chunk: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        source = chunk
        if self.ends_sentence is not None and self.starts_word is not None:
            is_end = noising.sentence_ends(chunk, self.ends_sentence, self.starts_word)
            source = noising.permute_sentences(chunk, is_end, generator)
        noised, _ = noising.text_infilling(source, self.mask_id, self.mask_ratio, self.poisson_lambda, generator)
        bos, eos = torch.tensor([self.bos_id]), torch.tensor([self.eos_id])
        inputs = torch.cat([bos, noised, eos])
        padding = len(chunk) + 2 - len(inputs)
        mask = torch.cat([torch.ones_like(inputs), torch.zeros(padding, dtype=torch.long)])
        inputs = torch.cat([inputs, torch.full((padding,), self.pad_id)])
        return {"input_ids": inputs, "attention_mask": mask, "labels": torch.cat([bos, chunk, eos])}


# --------------------------------------------------------------------------- data modules
class _NoisedTextDataModule(TextDataModule):
    """A ``TextDataModule`` whose examples are ``NoisedChunks``; subclasses give the objective."""

    def noise(self) -> Callable[[Tensor, torch.Generator], dict]:
        raise NotImplementedError

    def chunk_length(self) -> int:
        raise NotImplementedError

    def build_dataset(self, split: str) -> Dataset:
        return NoisedChunks(self.tokens(split), self.chunk_length(), self.noise(), seed=self.seed, name=split)

    def train_dataloader(self) -> DataLoader:
        # Keys epoch · n + i (as EpochSampler's), sharded over ranks and resumable mid-epoch.
        return resumable_loader(self.build_dataset("train"), self.batch_size, self.seed, self.trainer,
                                epoch_keys=True, num_workers=self.num_workers,
                                persistent_workers=self.num_workers > 0)


class MaskedLMDataModule(_NoisedTextDataModule):
    """BERT pre-training data: ``block_size`` tokens ``[CLS] … [SEP]``, 15% chosen for prediction.

    Batches: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (-100 where not chosen).

    Args:
        tokenizer_kind: defaults to "wordpiece" (BERT's).
        mlm_probability: share of the non-special tokens chosen for prediction.
        whole_word_masking: choose whole words (all their sub-tokens) rather than single tokens.
        mask_token_fraction: share of the chosen tokens replaced by [MASK].
        random_token_fraction: share of the chosen tokens replaced by a random token (the rest stay).
        mask_token: the mask token's text.
        **kwargs: every other ``TextDataModule`` argument (source, vocab_size, block_size, ...).
    """

    def __init__(self, tokenizer_kind: TokenizerKind = "wordpiece", mlm_probability: float = 0.15,
                 whole_word_masking: bool = False, mask_token_fraction: float = 0.8,
                 random_token_fraction: float = 0.1, mask_token: str = "[MASK]", **kwargs):
        super().__init__(tokenizer_kind=tokenizer_kind, **kwargs)
        if not 0.0 < mlm_probability < 1.0 or mask_token_fraction + random_token_fraction > 1.0:
            raise ZooError("need 0 < mlm_probability < 1 and mask_token_fraction + random_token_fraction <= 1")
        self.mlm_probability, self.whole_word_masking = mlm_probability, whole_word_masking
        self.mask_token_fraction, self.random_token_fraction = mask_token_fraction, random_token_fraction
        self.mask_token = mask_token

    def chunk_length(self) -> int:
        return self.block_size - 2

    def noise(self) -> MaskedLMNoise:
        tok = self.tokenizer
        cls_id = self.required_token_id("[CLS]" if tok.token_to_id("[CLS]") is not None else "<s>")
        sep_id = self.required_token_id("[SEP]" if tok.token_to_id("[SEP]") is not None else "</s>")
        mask_id = self.required_token_id(self.mask_token)
        return MaskedLMNoise(
            cls_id, sep_id, mask_id, noising.special_token_ids(tok), tok.get_vocab_size(),
            self.mlm_probability, self.mask_token_fraction, self.random_token_fraction,
            noising.word_start_table(tok) if self.whole_word_masking else None,
        )


class SpanCorruptionDataModule(_NoisedTextDataModule):
    """T5 pre-training data: inputs of exactly ``block_size`` tokens, targets of a fixed length.

    Batches: ``input_ids``, ``attention_mask`` (0 only on the rare one-token padding), ``labels``.

    Args:
        tokenizer_kind: defaults to "unigram" (T5's SentencePiece-style tokenizer with sentinels).
        noise_density: share of the raw tokens replaced.
        mean_noise_span_length: mean length of a replaced span.
        **kwargs: every other ``TextDataModule`` argument; ``block_size`` is the encoder input length.
    """

    def __init__(self, tokenizer_kind: TokenizerKind = "unigram", noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0, **kwargs):
        super().__init__(tokenizer_kind=tokenizer_kind, **kwargs)
        if not 0.0 < noise_density < 1.0 or mean_noise_span_length < 1.0:
            raise ZooError("need 0 < noise_density < 1 and mean_noise_span_length >= 1")
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length

    @property
    def lengths(self) -> tuple[int, int]:
        """(raw tokens per example, target length) for inputs of ``block_size``."""
        return noising.random_spans_helper(self.block_size, self.noise_density, self.mean_noise_span_length)

    def chunk_length(self) -> int:
        return self.lengths[0]

    def noise(self) -> SpanCorruptionNoise:
        tok = self.tokenizer
        sentinels = []
        while tok.token_to_id(f"<extra_id_{len(sentinels)}>") is not None:
            sentinels.append(tok.token_to_id(f"<extra_id_{len(sentinels)}>"))
        if not sentinels:
            raise ZooError("span corruption needs sentinel tokens <extra_id_0>, <extra_id_1>, ...; "
                           "use --data.tokenizer_kind unigram or add them to --data.special_tokens")
        return SpanCorruptionNoise(sentinels, self.eos_token_id, self.pad_token_id, self.block_size,
                                   self.noise_density, self.mean_noise_span_length)


class TextInfillingDataModule(_NoisedTextDataModule):
    """BART pre-training data: ``<s> noised </s>`` inputs padded to ``block_size``, labels ``<s> text </s>``.

    Args:
        tokenizer_kind: defaults to "bpe" (byte-level, BART's).
        special_tokens: defaults to BART's ``<s> <pad> </s> <unk> <mask>`` (ids 0–4).
        mask_ratio: share of the tokens inside masked spans.
        poisson_lambda: mean span length (λ of the Poisson distribution).
        permute_sentences: shuffle the sentences of each chunk before masking.
        **kwargs: every other ``TextDataModule`` argument (source, vocab_size, block_size, ...).
    """

    def __init__(self, tokenizer_kind: TokenizerKind = "bpe", special_tokens: Optional[list[str]] = None,
                 mask_ratio: float = 0.3, poisson_lambda: float = 3.0, permute_sentences: bool = True, **kwargs):
        specials = special_tokens if special_tokens is not None else list(BART_SPECIAL_TOKENS)
        super().__init__(tokenizer_kind=tokenizer_kind, special_tokens=specials, **kwargs)
        if not 0.0 < mask_ratio < 1.0 or poisson_lambda <= 0:
            raise ZooError("need 0 < mask_ratio < 1 and poisson_lambda > 0")
        self.mask_ratio, self.poisson_lambda, self.permute_sentences = mask_ratio, poisson_lambda, permute_sentences

    def chunk_length(self) -> int:
        return self.block_size - 2

    def noise(self) -> TextInfillingNoise:
        tok = self.tokenizer
        tables = (None, None)
        if self.permute_sentences:
            tables = (noising.sentence_end_table(tok), noising.word_start_table(tok))
        return TextInfillingNoise(self.required_token_id("<s>"), self.required_token_id("</s>"), self.pad_token_id,
                                  self.required_token_id("<mask>"), self.mask_ratio, self.poisson_lambda, *tables)


__all__ = [
    "EpochSampler", "MaskedLMDataModule", "MaskedLMNoise", "NoisedChunks", "SpanCorruptionDataModule",
    "SpanCorruptionNoise", "TextInfillingDataModule", "TextInfillingNoise", "example_seed",
]
