"""Properties of the pre-training objectives (zoo.data.noising) and of the data modules built on them."""

import random

import pytest
import torch

from zoo.data import noising
from zoo.data.noising import IGNORE_INDEX
from zoo.data.pretraining import MaskedLMDataModule, SpanCorruptionDataModule, TextInfillingDataModule
from zoo.data.tokenizer import train_tokenizer

SPECIALS = [0, 1, 2, 3, 4]  # pad, unk, cls, sep, mask
MASK, VOCAB = 4, 1000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def long_sequence(n: int = 20000, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(5, VOCAB, (n,), generator=gen(seed))
    ids[::50] = 3  # separators sprinkled in: never to be chosen
    return ids


# --------------------------------------------------------------------------- masked LM
def test_masked_fraction_and_80_10_10_split():
    ids = long_sequence()
    inputs, labels = noising.mask_tokens(ids, MASK, SPECIALS, VOCAB, generator=gen(1))
    chosen = labels != IGNORE_INDEX
    ordinary = int((~torch.isin(ids, torch.tensor(SPECIALS))).sum())
    assert int(chosen.sum()) == round(0.15 * ordinary)
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs[chosen] == MASK).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    replaced = 1 - masked - kept
    assert masked == pytest.approx(0.8, abs=0.025)
    assert kept == pytest.approx(0.1, abs=0.02)  # a random token equal to the original counts as kept (p≈0.001)
    assert replaced == pytest.approx(0.1, abs=0.02)
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_special_tokens_never_chosen_nor_injected():
    ids = long_sequence()
    inputs, labels = noising.mask_tokens(ids, MASK, SPECIALS, VOCAB, generator=gen(2))
    special = torch.isin(ids, torch.tensor(SPECIALS))
    assert bool((labels[special] == IGNORE_INDEX).all())
    random_tokens = (labels != IGNORE_INDEX) & (inputs != MASK) & (inputs != ids)
    assert not bool(torch.isin(inputs[random_tokens], torch.tensor(SPECIALS)).any())


def test_masking_is_deterministic_given_a_seed():
    ids = long_sequence(2000)
    a = noising.mask_tokens(ids, MASK, SPECIALS, VOCAB, generator=gen(7))
    b = noising.mask_tokens(ids, MASK, SPECIALS, VOCAB, generator=gen(7))
    c = noising.mask_tokens(ids, MASK, SPECIALS, VOCAB, generator=gen(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_whole_words_masked_together():
    ids = long_sequence(5000)
    starts = torch.rand(VOCAB, generator=gen(3)) < 0.5  # about half the vocabulary continues a word
    word_ids = noising.word_ids_from_starts(ids, starts)
    _, labels = noising.mask_tokens(ids, MASK, SPECIALS, VOCAB, word_ids=word_ids, generator=gen(4))
    chosen = labels != IGNORE_INDEX
    special = torch.isin(ids, torch.tensor(SPECIALS))
    for group in noising.word_groups(word_ids, special):
        assert bool(chosen[group].all()) or not bool(chosen[group].any())
    budget = round(0.15 * int((~special).sum()))
    assert budget - 10 <= int(chosen.sum()) <= budget  # whole words fill the budget without passing it
    assert any(len(g) > 1 and bool(chosen[g].all()) for g in noising.word_groups(word_ids, special))


def test_word_ids_from_vocabulary_match_the_encodings(text_maker):
    texts = [text_maker(random.Random(i)) for i in range(20)]
    for kind in ("wordpiece", "unigram"):
        tok = train_tokenizer(texts, kind, 400)
        enc = tok.encode(texts[0], add_special_tokens=False)
        from_vocab = noising.word_ids_from_starts(torch.tensor(enc.ids), noising.word_start_table(tok))
        from_encoding = noising.word_ids_from_encoding(enc)
        # same partition into words (numbering may differ)
        assert torch.equal(torch.diff(from_vocab) != 0, torch.diff(from_encoding) != 0), kind


# --------------------------------------------------------------------------- T5 span corruption
SENTINELS = list(range(2000, 2100))
EOS = 1


def test_random_spans_helper_matches_t5():
    assert noising.random_spans_helper(512, 0.15, 3.0) == (568, 114)  # the T5 paper's setting
    assert noising.random_spans_helper(128, 0.15, 3.0) == (141, 29)
    for length in range(8, 300, 7):
        raw, target = noising.random_spans_helper(length)
        inputs, targets = noising.span_corruption(torch.arange(10, 10 + raw), SENTINELS, EOS, generator=gen(length))
        assert len(inputs) in (length, length - 1)  # never over; one short only where rounding jumps
        assert len(targets) == target


def test_span_corruption_fixed_lengths_sentinel_order_and_reconstruction():
    raw, target = noising.random_spans_helper(128)
    ids = torch.randint(5, 1000, (raw,), generator=gen(0))
    lengths = set()
    for seed in range(30):
        inputs, targets = noising.span_corruption(ids, SENTINELS, EOS, generator=gen(seed))
        lengths.add((len(inputs), len(targets)))
        assert inputs[-1] == EOS and targets[-1] == EOS and targets[0] == SENTINELS[0]
        in_sent = [t for t in inputs.tolist() if t in SENTINELS]
        out_sent = [t for t in targets.tolist() if t in SENTINELS]
        assert in_sent == out_sent == SENTINELS[: len(in_sent)]  # <extra_id_0>, <extra_id_1>, ... in order
        assert noising.merge_span_corruption(inputs, targets, SENTINELS, EOS) == ids.tolist()
        noise = len(targets) - 1 - len(out_sent)
        assert noise == round(0.15 * raw)
    assert lengths == {(128, target)}


def test_span_corruption_mean_span_length_and_determinism():
    a = noising.random_spans_noise_mask(10000, 0.15, 3.0, gen(5))
    b = noising.random_spans_noise_mask(10000, 0.15, 3.0, gen(5))
    assert torch.equal(a, b) and not a[0] and a[-1]  # starts with kept tokens, ends in noise
    starts = int((a[1:] & ~a[:-1]).sum())
    assert int(a.sum()) / starts == pytest.approx(3.0, rel=0.01)


# --------------------------------------------------------------------------- BART
def wildcard_match(noised: list[int], original: list[int], mask: int) -> bool:
    """Does ``noised`` equal ``original`` with each ``mask`` standing for zero or more tokens?"""
    reach = {0}
    for tok in noised:
        if tok == mask:
            reach = {j for i in reach for j in range(i, len(original) + 1)}
        else:
            reach = {i + 1 for i in reach if i < len(original) and original[i] == tok}
    return len(original) in reach


def test_text_infilling_masks_30_percent_in_poisson_spans():
    ids = torch.randint(5, 1000, (126,), generator=gen(0))
    lengths, inserted = [], 0
    for seed in range(200):
        noised, spans = noising.text_infilling(ids, MASK, 0.3, 3.0, generator=gen(seed))
        assert sum(n for _, n in spans) == round(0.3 * len(ids))
        assert int((noised == MASK).sum()) == len(spans)  # one <mask> per span, insertions included
        assert len(noised) <= len(ids)
        rebuilt, pos = [], 0  # put the spans back: the original ids
        for (start, n), piece in zip(spans, _pieces(noised, MASK)):
            rebuilt += piece + ids[start : start + n].tolist()
            pos = start + n
        rebuilt += _pieces(noised, MASK)[-1]
        assert rebuilt == ids.tolist()
        assert wildcard_match(noised.tolist(), ids.tolist(), MASK)
        lengths += [n for _, n in spans]
        inserted += sum(n == 0 for _, n in spans)
    assert inserted > 0  # Poisson(3) gives zero-length spans: inserted <mask> tokens
    assert sum(lengths) / len(lengths) == pytest.approx(3.0, abs=0.35)  # the last span is trimmed
    # the distribution itself, on many spans: Poisson(3) has mean 3 and P(0) = e^-3; all but the
    # trimmed last span are untouched draws (std of the mean ≈ 0.017 here)
    drawn = noising.poisson_span_lengths(30000, 3.0, generator=gen(1)).double()
    assert int(drawn.sum()) == 30000 and drawn.min() >= 0
    assert drawn[:-1].mean().item() == pytest.approx(3.0, abs=0.06)
    assert (drawn[:-1] == 0).double().mean().item() == pytest.approx(0.0498, abs=0.008)


def _pieces(noised: torch.Tensor, mask: int) -> list[list[int]]:
    out, cur = [], []
    for tok in noised.tolist():
        if tok == mask:
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    return out + [cur]


def test_sentence_permutation_shuffles_whole_sentences(text_maker):
    texts = [text_maker(random.Random(i)) for i in range(20)]
    tok = train_tokenizer(texts, "bpe", 400, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    ids = torch.tensor(tok.encode(texts[0]).ids)
    ends = noising.sentence_ends(ids, noising.sentence_end_table(tok), noising.word_start_table(tok))
    assert int(ends.sum()) >= 3
    sentences = {tuple(s.tolist()) for s in torch.tensor_split(ids, (ends[:-1].nonzero().squeeze(1) + 1).tolist())}
    shuffled = noising.permute_sentences(ids, ends, gen(0))
    assert sorted(shuffled.tolist()) == sorted(ids.tolist()) and not torch.equal(shuffled, ids)
    assert torch.equal(noising.permute_sentences(ids, ends, gen(0)), shuffled)
    text = tok.decode(shuffled.tolist())
    assert all(tok.decode(list(s)).strip() in text for s in sentences)


# --------------------------------------------------------------------------- data modules
@pytest.fixture
def settings(corpus_dir, cache_dir):
    return {"source": str(corpus_dir), "cache_dir": str(cache_dir), "vocab_size": 400, "block_size": 32,
            "batch_size": 4}


def test_masked_lm_data_module_batches(settings):
    dm = MaskedLMDataModule(whole_word_masking=True, **settings)
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 32)
    assert bool((batch["input_ids"][:, 0] == dm.tokenizer.token_to_id("[CLS]")).all())
    assert bool((batch["labels"] != IGNORE_INDEX).any(1).all())
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(batch["input_ids"], again["input_ids"])  # validation noise is fixed


def test_training_noise_changes_with_the_epoch(settings):
    dm = MaskedLMDataModule(**settings)
    dataset = dm.build_dataset("train")
    n = len(dataset)
    assert torch.equal(dataset[3]["labels"], dataset[3]["labels"])
    assert not torch.equal(dataset[3]["labels"], dataset[n + 3]["labels"])  # same block, epoch 1
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    assert min(loader.sampler) >= n


def test_span_corruption_and_infilling_data_modules(settings):
    t5 = SpanCorruptionDataModule(**settings)
    batch = next(iter(t5.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32) and batch["labels"].shape == (4, t5.lengths[1])
    assert bool((batch["labels"][:, -1] == t5.eos_token_id).all())
    bart = TextInfillingDataModule(**settings)
    batch = next(iter(bart.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 32)
    assert bool((batch["input_ids"] == bart.tokenizer.token_to_id("<mask>")).any(1).all())
    assert bart.pad_token_id == 1 and bart.eos_token_id == 2  # BART's own ids
