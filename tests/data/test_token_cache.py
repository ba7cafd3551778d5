"""The on-disk cache: hits skip work, keys follow settings, writes are atomic and first-wins."""

import json

import numpy as np
import pytest

from zoo.data import cache
from zoo.data.sources import Document
from zoo.data.text import TextDataModule
from zoo.data.tokenizer import train_tokenizer
from zoo.errors import ZooError


def small_dm(corpus_dir, cache_dir, **kwargs):
    kwargs = {"vocab_size": 300, "block_size": 16, **kwargs}
    return TextDataModule(source=str(corpus_dir), cache_dir=str(cache_dir), **kwargs)


def test_second_build_reads_the_cache(corpus_dir, cache_dir, monkeypatch):
    first = small_dm(corpus_dir, cache_dir)
    first.prepare_data()
    first.setup("fit")

    def refuse(*args, **kwargs):
        raise AssertionError("cache miss: the corpus was tokenized or the tokenizer trained again")

    monkeypatch.setattr(cache, "encode_documents", refuse)
    monkeypatch.setattr(cache, "train_tokenizer", refuse)
    second = small_dm(corpus_dir, cache_dir)
    second.prepare_data()
    second.setup("fit")
    for split in ("train", "val"):
        assert np.array_equal(first.tokens(split), second.tokens(split))
    assert second.tokenizer_path == first.tokenizer_path


def test_cache_key_follows_cleaning_and_split_settings(corpus_dir, cache_dir):
    base = small_dm(corpus_dir, cache_dir)._token_cache_folder()
    assert small_dm(corpus_dir, cache_dir)._token_cache_folder() == base
    assert small_dm(corpus_dir, cache_dir, dedup=False)._token_cache_folder() != base
    assert small_dm(corpus_dir, cache_dir, min_chars=10)._token_cache_folder() != base
    assert small_dm(corpus_dir, cache_dir, seed=5)._token_cache_folder() != base
    assert small_dm(corpus_dir, cache_dir, vocab_size=400)._token_cache_folder() != base


def test_cache_key_follows_corpus_content(corpus_dir, cache_dir):
    base = small_dm(corpus_dir, cache_dir)._token_cache_folder()
    (corpus_dir / "doc000.txt").write_text("An edited document, long enough to be kept by cleaning.")
    assert small_dm(corpus_dir, cache_dir)._token_cache_folder() != base


def test_token_files_join_documents_with_eos(tmp_path):
    docs = [Document("a", "hello world"), Document("b", "second document here")]
    tok = train_tokenizer([d.text for d in docs], "bpe", 280)
    eos = tok.token_to_id("<|endoftext|>")
    paths = cache.build_token_files(tmp_path, {"train": docs}, tok, eos)
    tokens = cache.open_tokens(paths["train"], tok.get_vocab_size())
    assert tokens.dtype == np.uint16
    expected = tok.encode("hello world").ids + [eos] + tok.encode("second document here").ids + [eos]
    assert tokens.tolist() == expected
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["splits"]["train"] == {"docs": 2, "tokens": len(expected)} and meta["dtype"] == "uint16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "train.bin"]  # no temp files left


def test_token_dtype_widens_for_big_vocabularies():
    assert cache.token_dtype(4096) == np.uint16
    assert cache.token_dtype(65536) == np.uint16
    assert cache.token_dtype(65537) == np.uint32


def test_write_once_keeps_the_first_writer(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    cache.write_once(target, lambda f: f.write(b"first"))
    cache.write_once(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "file.bin"

    def explode(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.write_once(target, explode)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "env-cache"))
    assert cache.resolve_cache_dir(None) == tmp_path / "env-cache"
    assert cache.resolve_cache_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ZooError, match="cache_dir"):
        cache.resolve_cache_dir(str(blocker / "cache"))


def test_concurrent_builds_agree(corpus_dir, cache_dir):
    # Unigram training is not deterministic run to run: first-writer-wins must still give every
    # "rank" the same tokenizer file and the same token caches.
    from concurrent.futures import ThreadPoolExecutor

    def build(_):
        dm = small_dm(corpus_dir, cache_dir, tokenizer_kind="unigram", vocab_size=400)
        dm.prepare_data()
        dm.setup("fit")
        return dm.tokenizer.to_str(), np.asarray(dm.tokens("train")).copy(), dm.tokenizer_path

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(build, range(4)))
    assert all(r[0] == results[0][0] and r[2] == results[0][2] for r in results)
    assert all(np.array_equal(r[1], results[0][1]) for r in results)
    leftovers = [p for p in cache_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_progress_bar_only_for_many_documents(capsys):
    tok = train_tokenizer(["a few words of text"], "bpe", 270)
    few = [Document(str(i), "some text") for i in range(10)]
    list(cache.encode_documents(few, tok, 0))
    assert "tokenizing" not in capsys.readouterr().err
    many = [Document(str(i), "some text") for i in range(cache.PROGRESS_MIN_DOCS)]
    chunks = list(cache.encode_documents(many, tok, 0))
    assert "tokenizing" in capsys.readouterr().err
    assert sum(int((c == 0).sum()) for c in chunks) == len(many)
