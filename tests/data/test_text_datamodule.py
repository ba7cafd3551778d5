"""TextDataModule end to end: tmp corpora, the default pydoc corpus, Lightning, bad input."""

import math

import numpy as np
import pytest
import torch

from zoo.data.text import TextDataModule
from zoo.errors import ZooError


def small_dm(source, cache_dir, **kwargs):
    kwargs = {"vocab_size": 300, "block_size": 16, "batch_size": 4, **kwargs}
    return TextDataModule(source=str(source), cache_dir=str(cache_dir), **kwargs)


def test_end_to_end_on_a_folder(corpus_dir, cache_dir):
    dm = small_dm(corpus_dir, cache_dir)
    assert 256 < dm.model_vocab_size <= 300  # usable right after __init__, before setup
    assert dm.tokenizer_path.endswith("tokenizer.json")
    assert dm.eos_token_id == dm.tokenizer.token_to_id("<|endoftext|>")
    assert dm.pad_token_id == dm.tokenizer.token_to_id("<pad>")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 16)
    assert batch["input_ids"].dtype == torch.int64
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    assert int(batch["input_ids"].max()) < dm.model_vocab_size
    assert len(dm.documents("train")) + len(dm.documents("val")) == 40
    assert dm.cleaning_report.docs_in == 40
    eos_count = int((np.asarray(dm.tokens("train")) == dm.eos_token_id).sum())
    assert eos_count == len(dm.documents("train"))


def test_validation_is_deterministic_and_test_falls_back_to_it(corpus_dir, cache_dir):
    first, second = small_dm(corpus_dir, cache_dir), small_dm(corpus_dir, cache_dir)
    for dm in (first, second):
        dm.setup("validate")
    val_a = [b["input_ids"] for b in first.val_dataloader()]
    val_b = [b["input_ids"] for b in second.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b)) and len(val_a) == len(val_b)
    test = [b["input_ids"] for b in first.test_dataloader()]
    assert len(test) == len(val_a) > 0 and all(torch.equal(a, b) for a, b in zip(val_a, test))
    train_ids = {d.id for d in first.documents("train")}
    assert train_ids.isdisjoint(d.id for d in first.documents("val"))


def test_training_order_is_seeded(corpus_dir, cache_dir):
    orders = []
    for seed in (1, 1, 2):
        dm = small_dm(corpus_dir, cache_dir, seed=seed, val_fraction=0.2)
        dm.setup("fit")
        orders.append(next(iter(dm.train_dataloader()))["input_ids"])
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_other_tokenizer_kinds(corpus_dir, cache_dir, kind):
    dm = small_dm(corpus_dir, cache_dir, tokenizer_kind=kind, vocab_size=400)
    dm.setup("fit")
    assert dm.eos_token_id == dm.tokenizer.token_to_id("[SEP]" if kind == "wordpiece" else "</s>")
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == (4, 16)


def test_existing_tokenizer_is_loaded_not_trained(corpus_dir, cache_dir, tmp_path):
    trained = small_dm(corpus_dir, cache_dir)
    reused = small_dm(corpus_dir, tmp_path / "other-cache", tokenizer=trained.tokenizer_path, vocab_size=999)
    assert reused.model_vocab_size == trained.model_vocab_size
    assert reused.tokenizer_path == trained.tokenizer_path
    assert not (tmp_path / "other-cache" / "tokenizers").exists()


def test_unigram_perplexity_matches_a_direct_count(corpus_dir, cache_dir):
    dm = small_dm(corpus_dir, cache_dir)
    dm.setup("fit")
    ppl = dm.unigram_perplexity()
    counts = np.bincount(np.asarray(dm.tokens("train")), minlength=dm.model_vocab_size) + 1.0
    probs = counts / counts.sum()
    labels = torch.cat([b["labels"].flatten() for b in dm.val_dataloader()]).numpy()
    assert ppl == pytest.approx(float(np.exp(-np.log(probs[labels]).mean())), rel=1e-9)
    assert math.isfinite(ppl) and 1.0 < ppl < dm.model_vocab_size


def test_separate_test_source(corpus_dir, cache_dir, tmp_path, corpus_writer):
    corpus_writer(tmp_path / "held-out", n_docs=5, seed=99)
    dm = small_dm(corpus_dir, cache_dir, test_source=str(tmp_path / "held-out"))
    dm.setup("test")
    assert [d.id for d in dm.documents("test")] == [f"doc{i:03d}.txt" for i in range(5)]
    assert not np.array_equal(dm.tokens("test"), dm.tokens("val"))
    assert next(iter(dm.test_dataloader()))["input_ids"].shape == (4, 16)


def test_default_pydoc_corpus(cache_dir):
    dm = TextDataModule(vocab_size=512, block_size=64, cache_dir=str(cache_dir))
    assert dm.model_vocab_size == 512
    dm.prepare_data()
    dm.setup("fit")
    report = dm.cleaning_report
    from pydoc_data.topics import topics

    assert report.docs_in == len(topics) and report.docs_out >= len(topics) - 4
    ids = {d.id for d in dm.documents("train")} | {d.id for d in dm.documents("val")}
    assert {"assert", "if", "lambda"} & ids and all(" " not in i for i in ids)  # topic names
    assert len(dm.val_dataloader()) >= 2
    ppl = dm.unigram_perplexity()
    assert math.isfinite(ppl) and 1.0 < ppl < 512
    text = dm.documents("val")[0].text[:500]
    assert dm.tokenizer.decode(dm.tokenizer.encode(text).ids) == text


def test_lightning_trainer_runs_on_it(corpus_dir, cache_dir):
    import lightning.pytorch as pl

    dm = small_dm(corpus_dir, cache_dir)

    class Bigram(pl.LightningModule):
        def __init__(self, vocab_size):
            super().__init__()
            self.logits = torch.nn.Embedding(vocab_size, vocab_size)

        def training_step(self, batch, _):
            out = self.logits(batch["input_ids"])  # (B, T, V)
            return torch.nn.functional.cross_entropy(out.flatten(0, 1), batch["labels"].flatten())

        def validation_step(self, batch, _):
            self.training_step(batch, _)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(Bigram(dm.model_vocab_size), datamodule=dm)


def test_arguments_work_as_cli_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(TextDataModule, "data")
    cfg = parser.parse_args(["--data.vocab_size=512", "--data.tokenizer_kind=unigram", "--data.special_tokens=[a,b]"])
    assert cfg.data.vocab_size == 512 and cfg.data.source == "pydoc" and cfg.data.special_tokens == ["a", "b"]
    with pytest.raises(Exception):
        parser.parse_args(["--data.tokenizer_kind=sentencepiece"])


# ----------------------------------------------------------------- bad input
def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_empty_corpus_after_cleaning(tmp_path, cache_dir):
    (tmp_path / "a.txt").write_text("tiny")
    (tmp_path / "b.txt").write_text("   \n\n  ")
    dm = small_dm(tmp_path, cache_dir)
    with pytest.raises(ZooError) as excinfo:
        dm.model_vocab_size
    message = one_line(excinfo)
    assert str(tmp_path) in message and "empty after cleaning" in message and "--data.min_chars" in message


def test_binary_and_non_utf8_corpora(tmp_path, cache_dir):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(ZooError) as excinfo:
        small_dm(binary, cache_dir).prepare_data()
    assert str(binary) in one_line(excinfo)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Ça coûte très cher, à vrai dire.".encode("latin-1"))
    with pytest.raises(ZooError) as excinfo:
        small_dm(latin, cache_dir).setup("fit")
    assert "not valid UTF-8" in one_line(excinfo)


def test_missing_path_glob_and_jsonl_field(tmp_path, cache_dir):
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "*.txt"): "matched no files",
    }
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"body": "text under another name"}\n')
    cases[str(rows)] = "has no field 'text'"
    for source, expected in cases.items():
        with pytest.raises(ZooError) as excinfo:
            small_dm(source, cache_dir).model_vocab_size
        assert expected in one_line(excinfo)


def test_bad_tokenizer_path(corpus_dir, cache_dir, tmp_path):
    dm = small_dm(corpus_dir, cache_dir, tokenizer=str(tmp_path / "nope.json"))
    with pytest.raises(ZooError, match="does not exist"):
        dm.model_vocab_size


def test_block_size_larger_than_validation_split(corpus_dir, cache_dir):
    dm = small_dm(corpus_dir, cache_dir, block_size=50_000)
    dm.setup("fit")
    with pytest.raises(ZooError, match="block_size=50000"):
        dm.val_dataloader()


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"tokenizer_kind": "x"}, "tokenizer_kind"),
    ],
)
def test_impossible_settings_fail_at_construction(kwargs, key):
    with pytest.raises(ZooError, match=key):
        TextDataModule(**kwargs)
