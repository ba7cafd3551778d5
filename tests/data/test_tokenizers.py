"""Tokenizer training for the three kinds: round trips, special tokens, loading, bad input."""

import pytest
from tokenizers import Tokenizer, models

from zoo.data.sources import pydoc_documents
from zoo.data.tokenizer import (
    default_special_tokens,
    eos_token_id,
    load_tokenizer,
    pad_token_id,
    sentinel_tokens,
    train_tokenizer,
)
from zoo.errors import ZooError

TEXTS = [doc.text for doc in pydoc_documents()[:25]]
SAMPLE = 'The "assert" statement\n\n   if __debug__:\n       if not expression: raise AssertionError\n'


@pytest.fixture(scope="module")
def trained():
    return {kind: train_tokenizer(TEXTS, kind, vocab_size=800) for kind in ("bpe", "wordpiece", "unigram")}


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_special_tokens_have_ids_first_in_order(trained, kind):
    tok = trained[kind]
    specials = default_special_tokens(kind)
    assert [tok.token_to_id(t) for t in specials] == list(range(len(specials)))
    assert tok.get_vocab_size() <= 800


def test_default_special_tokens_per_kind():
    assert default_special_tokens("bpe") == ["<|endoftext|>", "<pad>"]
    assert default_special_tokens("wordpiece") == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    unigram = default_special_tokens("unigram")
    assert unigram[:3] == ["<pad>", "</s>", "<unk>"]
    assert unigram[3:] == sentinel_tokens(100) and unigram[-1] == "<extra_id_99>"


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_decode_round_trips_exactly(trained, kind):
    tok = trained[kind]
    ids = tok.encode(SAMPLE, add_special_tokens=False).ids
    assert tok.decode(ids) == SAMPLE


def test_bpe_round_trips_unseen_characters(trained):
    text = "naïve — 漢字 🙂\ttabs\n"
    tok = trained["bpe"]
    encoding = tok.encode(text, add_special_tokens=False)
    assert tok.decode(encoding.ids) == text
    assert tok.token_to_id("<unk>") is None  # byte-level: nothing is unknown


def test_wordpiece_round_trips_words(trained):
    tok = trained["wordpiece"]
    decoded = tok.decode(tok.encode(SAMPLE).ids)
    # BERT's pre-tokenizer drops whitespace: the words come back, the spacing may not.
    assert "".join(decoded.split()) == "".join(SAMPLE.split())


def test_post_processors(trained):
    wp = trained["wordpiece"]
    ids = wp.encode("is equivalent to").ids
    assert ids[0] == wp.token_to_id("[CLS]") and ids[-1] == wp.token_to_id("[SEP]")
    pair = wp.encode("first", "second")
    assert pair.type_ids[0] == 0 and pair.type_ids[-1] == 1
    t5 = trained["unigram"]
    assert t5.encode("is equivalent to").ids[-1] == t5.token_to_id("</s>")
    gpt = trained["bpe"]
    assert gpt.encode("text").ids == gpt.encode("text", add_special_tokens=False).ids


def test_eos_and_pad_ids(trained):
    assert eos_token_id(trained["bpe"]) == trained["bpe"].token_to_id("<|endoftext|>")
    assert pad_token_id(trained["bpe"]) == trained["bpe"].token_to_id("<pad>")
    assert eos_token_id(trained["wordpiece"]) == trained["wordpiece"].token_to_id("[SEP]")
    assert pad_token_id(trained["unigram"]) == 0 and eos_token_id(trained["unigram"]) == 1
    gpt2_like = train_tokenizer(TEXTS[:3], "bpe", 300, ["<|endoftext|>"])
    assert pad_token_id(gpt2_like) == eos_token_id(gpt2_like)  # no pad token: pad with eos


def test_bart_special_tokens_get_a_template():
    tok = train_tokenizer(TEXTS[:5], "bpe", 400, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    ids = tok.encode("hello").ids
    assert ids[0] == tok.token_to_id("<s>") and ids[-1] == tok.token_to_id("</s>")


def test_save_and_load(tmp_path, trained):
    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    trained["unigram"].save(str(path))
    for where in (path, path.parent, str(path)):
        loaded = load_tokenizer(where)
        assert loaded.encode(SAMPLE).ids == trained["unigram"].encode(SAMPLE).ids


def test_load_missing_and_invalid(tmp_path):
    with pytest.raises(ZooError, match="does not exist") as excinfo:
        load_tokenizer(tmp_path / "missing.json")
    assert "--data.tokenizer" in str(excinfo.value)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ZooError, match="not a valid tokenizers JSON") as excinfo:
        load_tokenizer(bad)
    assert "\n" not in str(excinfo.value)


def test_bad_training_settings():
    with pytest.raises(ZooError, match="end-of-text"):
        train_tokenizer(TEXTS[:2], "bpe", 300, ["<pad>"])
    with pytest.raises(ZooError, match="unknown-word"):
        train_tokenizer(TEXTS[:2], "wordpiece", 300, ["[PAD]", "[SEP]"])
    with pytest.raises(ZooError, match="vocab_size"):
        train_tokenizer(TEXTS[:2], "unigram", 50)
    with pytest.raises(ZooError, match="tokenizer kind"):
        train_tokenizer(TEXTS[:2], "sentencepiece", 300)  # type: ignore[arg-type]


def test_tokenizer_without_eos_is_refused():
    bare = Tokenizer(models.BPE())
    with pytest.raises(ZooError, match="no end-of-text token"):
        eos_token_id(bare)
