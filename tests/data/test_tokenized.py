"""TokenizerMixin: every data module gets its tokenizer one way — from a file, a folder or a zoo
checkpoint, else built by the module — once, checked for an end-of-text token."""

import pytest
import torch

from zoo.data import ClassificationDataModule, ImageTextDataModule, MaskedLMDataModule, TextDataModule
from zoo.data.tokenized import TokenizerMixin
from zoo.data.tokenizer import eos_token_id, load_tokenizer, pad_token_id, train_tokenizer
from zoo.errors import ZooError

TEXTS = ["alpha beta gamma delta", "the quick brown fox jumps over the lazy dog", "ka lo mi ne ru sa"] * 5


@pytest.fixture
def bpe(tmp_path):
    tok = train_tokenizer(TEXTS, "bpe", 300)
    folder = tmp_path / "run"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return tok, folder


def checkpoint(path, tokenizer):
    torch.save({"state_dict": {}, "zoo": {"family": "gpt", "tokenizer": tokenizer}}, path)
    return str(path)


def test_every_data_module_shares_the_one_tokenizer_handling():
    for module in (TextDataModule, MaskedLMDataModule, ClassificationDataModule, ImageTextDataModule):
        assert issubclass(module, TokenizerMixin)
        for name in ("tokenizer", "model_vocab_size", "eos_token_id", "pad_token_id", "tokenizer_path"):
            assert getattr(module, name) is getattr(TokenizerMixin, name), (module, name)


def test_a_folder_a_file_and_a_checkpoint_load_the_same_tokenizer(tmp_path, bpe):
    tok, folder = bpe
    ckpt = checkpoint(tmp_path / "last.ckpt", tok.to_str())
    for source in (str(folder), str(folder / "tokenizer.json"), ckpt):
        assert load_tokenizer(source).to_str() == tok.to_str()
        dm = ImageTextDataModule(tokenizer=source)  # a caption tokenizer from a text model's run or checkpoint
        assert dm.tokenizer.to_str() == tok.to_str() and dm.tokenizer is dm.tokenizer  # loaded once
        assert dm.model_vocab_size == tok.get_vocab_size()
        assert (dm.eos_token_id, dm.pad_token_id) == (eos_token_id(tok), pad_token_id(tok))
    assert ImageTextDataModule(tokenizer=str(folder)).tokenizer_path == str(folder / "tokenizer.json")
    assert ImageTextDataModule(tokenizer=ckpt).tokenizer_path == ckpt


def test_a_checkpoint_without_a_tokenizer_names_the_fix(tmp_path):
    ckpt = checkpoint(tmp_path / "bare.ckpt", None)
    with pytest.raises(ZooError, match="carries no tokenizer; pass its tokenizer.json"):
        load_tokenizer(ckpt)
    with pytest.raises(ZooError, match="carries no tokenizer"):
        ClassificationDataModule(tokenizer=ckpt).model_vocab_size


def test_built_tokenizers_and_the_end_of_text_check(tmp_path):
    dm = ImageTextDataModule(vocab_size=300)
    assert dm.tokenizer_path is None  # trained on the captions, in memory
    assert dm.tokenizer.decode([dm.eos_token_id]) == "" and dm.tokenizer.token_to_id("<|endoftext|>") == dm.eos_token_id
    path = tmp_path / "t5.json"
    unigram = train_tokenizer(TEXTS, "unigram", 200, ["<pad>", "</s>", "<unk>"])
    unigram.save(str(path))
    dm = TextDataModule(tokenizer=str(path))
    assert (dm.eos_token_id, dm.pad_token_id) == (unigram.token_to_id("</s>"), unigram.token_to_id("<pad>"))


def test_a_tokenizer_without_end_of_text_fails_on_first_use(tmp_path):
    from tokenizers import Tokenizer, models

    path = tmp_path / "plain.json"
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    dm = ClassificationDataModule(tokenizer=str(path))  # construction does not load it
    with pytest.raises(ZooError, match="no end-of-text token"):
        dm.model_vocab_size


def test_required_token_id_names_the_missing_token(bpe):
    _, folder = bpe
    dm = MaskedLMDataModule(tokenizer=str(folder))
    assert dm.required_token_id("<|endoftext|>") == eos_token_id(dm.tokenizer)
    with pytest.raises(ZooError, match=r"no '\[MASK\]' token, which MaskedLMDataModule needs"):
        dm.required_token_id("[MASK]")
