"""Pre-training noise: the corruptions an encoder or encoder-decoder learns to undo.

- Masked LM (BERT; Devlin et al. 2019): of the non-special tokens, 15% are chosen; of those, 80%
  become ``[MASK]``, 10% a random token and 10% stay as they are; the loss is on the chosen ones
  only (labels are -100 elsewhere). Drawing a fresh mask every time an example is read is the
  dynamic masking of RoBERTa (Liu et al. 2019). Whole-word masking (google-research/bert,
  2019 update) chooses words instead of tokens, masking all of a word's sub-tokens together.
- Span corruption (T5; Raffel et al. 2020): 15% of the tokens, in spans of mean length 3, are
  each replaced by one sentinel ``<extra_id_i>`` in the inputs; the targets list the spans, each
  after its sentinel. ``random_spans_helper`` and ``random_spans_noise_mask`` follow
  ``t5.data.preprocessors``, so inputs and targets have fixed lengths.
- Text infilling and sentence permutation (BART; Lewis et al. 2020): spans with Poisson(3)
  lengths covering 30% of the tokens are each replaced by one ``<mask>`` (a zero-length span
  inserts a ``<mask>``), and sentences are shuffled; the decoder rebuilds the original.

Every function takes token ids as a 1-D tensor and an optional ``torch.Generator``: the same
generator state gives the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

IGNORE_INDEX = -100


# --------------------------------------------------------------------------- masked LM
def mask_tokens(
    ids: Tensor,
    mask_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    word_ids: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking of ``ids`` (T,): returns ``(input_ids, labels)``, labels -100 where not chosen.

    ``round(probability · n)`` of the ``n`` non-special tokens are chosen (at least one), as in the
    BERT repository. With ``word_ids`` (T,) (equal ids on a word's sub-tokens, -1 for none), whole
    words are chosen until that count is reached, never exceeding it.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=torch.long))
    budget = max(1, round(probability * int((~special).sum()))) if bool((~special).any()) else 0
    if word_ids is None:
        candidates = (~special).nonzero().squeeze(1)
        picked = candidates[torch.randperm(len(candidates), generator=generator)[:budget]]
        chosen = torch.zeros_like(special).index_fill_(0, picked, True)
    else:
        chosen = _choose_whole_words(torch.as_tensor(word_ids), special, budget, generator)
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    roll = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (roll < mask_fraction)
    to_random = chosen & (roll >= mask_fraction) & (roll < mask_fraction + random_fraction)
    inputs = ids.masked_fill(to_mask, mask_id)
    ordinary = (~torch.isin(torch.arange(vocab_size), special_ids_tensor(special_ids))).nonzero().squeeze(1)
    replacements = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator)]
    inputs = torch.where(to_random, replacements, inputs)
    return inputs, labels


def special_ids_tensor(special_ids: Sequence[int]) -> Tensor:
    return torch.as_tensor(list(special_ids), dtype=torch.long)


def word_groups(word_ids: Tensor, excluded: Tensor) -> list[Tensor]:
    """Positions of each word: maximal runs of equal ``word_ids``, skipping excluded or -1 positions."""
    keep = ~excluded & (word_ids >= 0)
    new = torch.ones_like(keep)
    new[1:] = (word_ids[1:] != word_ids[:-1]) | ~keep[:-1]
    group = torch.cumsum(new & keep, 0) - 1
    positions = keep.nonzero().squeeze(1)
    return list(torch.split(positions, torch.bincount(group[positions]).tolist())) if len(positions) else []


def _choose_whole_words(word_ids: Tensor, special: Tensor, budget: int, generator) -> Tensor:
    """Whole words in random order, each taken if it still fits the budget (the BERT repo's rule)."""
    chosen = torch.zeros_like(special)
    groups = word_groups(word_ids, special)
    count = 0
    for g in torch.randperm(len(groups), generator=generator).tolist():
        if count >= budget:
            break
        if count + len(groups[g]) > budget:
            continue
        chosen[groups[g]] = True
        count += len(groups[g])
    return chosen


def word_ids_from_starts(ids: Tensor, word_starts: Tensor) -> Tensor:
    """Word index of every token, from a per-vocabulary "this token begins a word" table."""
    starts = word_starts[torch.as_tensor(ids, dtype=torch.long)].clone()
    starts[0] = True
    return torch.cumsum(starts.long(), 0) - 1


def word_ids_from_encoding(encoding) -> Tensor:
    """``tokenizers.Encoding.word_ids`` as a tensor, -1 where a token belongs to no word."""
    return torch.tensor([-1 if w is None else w for w in encoding.word_ids], dtype=torch.long)


# --------------------------------------------------------------------------- T5 span corruption
def random_spans_helper(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """``(raw_tokens, targets_length)``: the raw chunk length whose corruption yields at most
    ``inputs_length`` input tokens (sentinels and ``</s>`` included), and the targets' length.

    As ``t5.data.preprocessors.random_spans_helper`` (one sentinel per span, one ``</s>``), with the
    clamps of ``random_spans_noise_mask`` (at least one noise token and one span), which T5's helper
    omits; they matter only for inputs of a handful of tokens.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        noise = min(max(int(round(tokens_length * noise_density)), 1), tokens_length - 1)
        spans = max(int(round(noise / mean_noise_span_length)), 1)
        return tokens_length - noise + spans + 1, noise + spans + 1

    if inputs_length < 3:
        raise ValueError(f"inputs_length={inputs_length} leaves no room for a token, a sentinel and </s>")
    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:  # T5's hack for round numbers
        tokens_length, targets_length = tokens_length - 1, targets_length - 1
    return tokens_length, targets_length


def _random_segmentation(num_items: int, num_segments: int, generator) -> Tensor:
    """Split ``num_items`` into ``num_segments`` non-empty segments, uniformly at random; their lengths."""
    first = torch.zeros(num_items - 1, dtype=torch.long)
    first[: num_segments - 1] = 1
    first = torch.cat([torch.zeros(1, dtype=torch.long), first[torch.randperm(num_items - 1, generator=generator)]])
    return torch.bincount(torch.cumsum(first, 0), minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0, generator=None
) -> Tensor:
    """Bool (length,) mask of noise spans; starts with non-noise and ends with noise, as in T5."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    keep_lengths = _random_segmentation(length - num_noise, num_spans, generator)
    interleaved = torch.stack([keep_lengths, noise_lengths], dim=1).reshape(-1)  # keep, noise, keep, ...
    starts = torch.zeros(length, dtype=torch.long)
    starts[torch.cumsum(interleaved, 0)[:-1]] = 1
    return torch.cumsum(starts, 0) % 2 == 1


def span_corruption(
    ids: Tensor,
    sentinel_ids: Sequence[int],
    eos_id: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """T5's objective on ``ids`` (T,): ``(inputs, targets)``, both ending in ``eos_id``.

    inputs:  the kept tokens, each noise span replaced by the next sentinel;
    targets: ``<extra_id_0> span_0 <extra_id_1> span_1 ... </s>``.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    noise = random_spans_noise_mask(len(ids), noise_density, mean_noise_span_length, generator)
    span_start = noise & ~torch.cat([torch.zeros(1, dtype=torch.bool), noise[:-1]])
    span_index = torch.cumsum(span_start.long(), 0) - 1
    if int(span_start.sum()) > len(sentinel_ids):
        raise ValueError(
            f"{int(span_start.sum())} noise spans need as many sentinels but the tokenizer has {len(sentinel_ids)}; "
            "lower block_size or add <extra_id_N> tokens"
        )
    sentinel = torch.as_tensor(list(sentinel_ids), dtype=torch.long)[span_index.clamp(min=0)]
    eos = torch.tensor([eos_id])
    inputs = torch.where(span_start, sentinel, ids)[~noise | span_start]
    pairs = torch.stack([torch.where(span_start, sentinel, -1), ids], dim=1)[noise].reshape(-1)
    return torch.cat([inputs, eos]), torch.cat([pairs[pairs >= 0], eos])


def merge_span_corruption(inputs: Tensor, targets: Tensor, sentinel_ids: Sequence[int], eos_id: int) -> list[int]:
    """Undo ``span_corruption``: put each target span back in place of its sentinel."""
    sentinels = {int(s): i for i, s in enumerate(sentinel_ids)}
    spans: dict[int, list[int]] = {}
    current = None
    for tok in _until(targets.tolist(), eos_id):
        if tok in sentinels:
            current = spans.setdefault(sentinels[tok], [])
        elif current is not None:
            current.append(tok)
    out: list[int] = []
    for tok in _until(inputs.tolist(), eos_id):
        out.extend(spans.get(sentinels[tok], []) if tok in sentinels else [tok])
    return out


def _until(ids: list[int], stop: int) -> list[int]:
    return ids[: ids.index(stop)] if stop in ids else ids


# --------------------------------------------------------------------------- BART
def poisson_span_lengths(num_to_mask: int, poisson_lambda: float, generator=None) -> Tensor:
    """Span lengths ~ Poisson(λ), drawn until they cover ``num_to_mask`` tokens; the last is trimmed."""
    lengths = torch.zeros(0, dtype=torch.long)
    while int(lengths.sum()) < num_to_mask:
        draw = torch.poisson(torch.full((max(num_to_mask, 4),), float(poisson_lambda)), generator=generator)
        lengths = torch.cat([lengths, draw.long()])
    last = int(torch.searchsorted(torch.cumsum(lengths, 0), num_to_mask))  # first index reaching the total
    lengths = lengths[: last + 1].clone()
    lengths[-1] -= int(lengths.sum()) - num_to_mask
    return lengths


def infilling_spans(
    length: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0, generator=None
) -> list[tuple[int, int]]:
    """Non-overlapping ``(start, span_length)`` pairs covering ``round(mask_ratio · length)`` tokens.

    Spans keep at least one unmasked token between them (so each stays one ``<mask>``); zero-length
    spans (insertions) are dropped first, then spans merged, when the text is too short for that.
    """
    num_to_mask = int(round(length * mask_ratio))
    if num_to_mask == 0:
        return []
    lengths = poisson_span_lengths(num_to_mask, poisson_lambda, generator)
    keep = length - num_to_mask
    # One <mask> per span must not make the inputs longer than the text: drop insertions if so.
    while len(lengths) - 1 > keep or len(lengths) > num_to_mask:
        zero = (lengths == 0).nonzero()
        if len(zero):
            lengths = torch.cat([lengths[: zero[-1, 0]], lengths[zero[-1, 0] + 1 :]])
        else:
            lengths = torch.cat([lengths[:-2], lengths[-2:].sum(0, keepdim=True)])
    k = len(lengths)
    extra = keep - (k - 1)  # unmasked tokens free to place once each inner gap has one
    bars = torch.sort(torch.randperm(extra + k, generator=generator)[:k]).values
    gaps = torch.diff(torch.cat([torch.tensor([-1]), bars, torch.tensor([extra + k])])) - 1
    gaps[1:k] += 1
    spans, pos = [], 0
    for gap, span in zip(gaps[:k].tolist(), lengths.tolist()):
        pos += gap
        spans.append((pos, span))
        pos += span
    return spans


def text_infilling(
    ids: Tensor, mask_id: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0, generator=None
) -> tuple[Tensor, list[tuple[int, int]]]:
    """BART's text infilling of ``ids`` (T,): the noised ids and the ``(start, length)`` spans masked."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    spans = infilling_spans(len(ids), mask_ratio, poisson_lambda, generator)
    pieces, pos = [], 0
    mask = torch.tensor([mask_id])
    for start, span in spans:
        pieces += [ids[pos:start], mask]
        pos = start + span
    pieces.append(ids[pos:])
    return torch.cat(pieces), spans


def sentence_ends(ids: Tensor, ends_sentence: Tensor, starts_word: Tensor) -> Tensor:
    """Bool (T,): the token closes a sentence (ends in . ! ?) and the next token begins a new word."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    next_starts = torch.cat([starts_word[ids[1:]], torch.ones(1, dtype=torch.bool)])
    return ends_sentence[ids] & next_starts


def permute_sentences(ids: Tensor, is_end: Tensor, generator=None) -> Tensor:
    """BART's sentence permutation: split ``ids`` after every ``is_end`` position, shuffle the pieces."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    cuts = (is_end[:-1].nonzero().squeeze(1) + 1).tolist()
    sentences = torch.tensor_split(ids, cuts)
    order = torch.randperm(len(sentences), generator=generator).tolist()
    return torch.cat([sentences[i] for i in order])


# --------------------------------------------------------------------------- vocabulary tables
def word_start_table(tokenizer) -> Tensor:
    """Bool (V,): the token begins a word: WordPiece ``##`` continues one; a Unigram (``▁``) or
    byte-level BPE (``Ġ`` space, ``Ċ`` newline) token starting with its space marker begins one."""
    vocab = [tokenizer.id_to_token(i) or "" for i in range(tokenizer.get_vocab_size())]
    model = tokenizer.model
    if type(model).__name__ == "WordPiece":
        prefix = model.continuing_subword_prefix
        starts = [not tok.startswith(prefix) for tok in vocab]
    else:
        metaspace = sum(t.startswith("▁") for t in vocab) > sum(t.startswith("Ġ") for t in vocab)
        marks = ("▁",) if metaspace else ("Ġ", "Ċ", "ĉ")
        starts = [tok.startswith(marks) for tok in vocab]
    table = torch.tensor(starts, dtype=torch.bool)
    table[special_token_ids(tokenizer)] = True
    return table


def sentence_end_table(tokenizer) -> Tensor:
    """Bool (V,): the token's text ends with a full stop, ``!`` or ``?`` (trailing spaces aside)."""
    ends = [tokenizer.decode([i], skip_special_tokens=False).rstrip().endswith((".", "!", "?"))
            for i in range(tokenizer.get_vocab_size())]
    table = torch.tensor(ends, dtype=torch.bool)
    table[special_token_ids(tokenizer)] = False
    return table


def special_token_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's special tokens ([CLS], </s>, <pad>, sentinels, ...), sorted."""
    return sorted(i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special)
