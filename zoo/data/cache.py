"""The on-disk cache: trained tokenizers and tokenized corpora, addressed by content hash.

Layout under the cache dir (``cache_dir`` argument, else ``$ZOO_CACHE_DIR``, else
``~/.cache/zoo``)::

    tokenizers/<key>/tokenizer.json    key = hash(train documents, kind, vocab size, specials)
    tokens/<key>/{train,val,test}.bin  key = hash(documents, cleaning + split settings, tokenizer)
    tokens/<key>/meta.json             dtype and counts, for people

A ``.bin`` is a flat array of token ids (uint16 when the vocabulary fits, else uint32), the
documents joined with the end-of-text id after each one, as in nanoGPT's ``prepare.py``; it is
read back as a ``numpy.memmap``.

Writes go to a temporary file in the destination folder and are then published under the
final name only if nothing is there yet (first writer wins). Tokenizing is deterministic, and
tokenizer training need not be, so with first-writer-wins several processes (DDP ranks) can
build at once and still all read the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import tokenizers
from tokenizers import Tokenizer
from tqdm import tqdm

from zoo.data.sources import Document
from zoo.data.tokenizer import load_tokenizer, train_tokenizer
from zoo.errors import ZooError

CACHE_ENV = "ZOO_CACHE_DIR"
CACHE_VERSION = 1  # bump when the file layout or the tokenization recipe changes
PROGRESS_MIN_DOCS = 5000  # a progress bar below this would only flash
ENCODE_CHUNK_DOCS = 1024


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder, created if needed; a ZooError when it cannot be."""
    path = Path(cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/zoo").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooError(
            f"cannot create the cache folder {path} ({err.strerror}); "
            f"set --data.cache_dir or {CACHE_ENV} to a writable folder"
        ) from err
    return path


def fingerprint(*parts: Any) -> str:
    """A short, stable hex key for JSON-serializable parts (strings, numbers, lists, dicts)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def documents_digest(docs: Sequence[Document]) -> str:
    """A hash of the documents' ids and texts, in order."""
    h = hashlib.sha256()
    for doc in docs:
        for field in (doc.id, doc.text):
            data = field.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))  # length-prefixed: no ambiguous joins
            h.update(data)
    return h.hexdigest()


def write_once(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``final`` through a temp file in its folder; keep an existing ``final`` if one appears."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _publish(Path(tmp), final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _publish(tmp: Path, final: Path) -> None:
    try:
        os.link(tmp, final)  # atomic, and fails if another process published first
    except FileExistsError:
        pass
    except OSError:  # filesystems without hard links: replace is atomic too, last writer wins
        os.replace(tmp, final)


def cached_tokenizer(
    train_docs: Sequence[Document],
    kind: str,
    vocab_size: int,
    special_tokens: list[str] | None,
    cache_dir: Path,
) -> tuple[Tokenizer, Path]:
    """The tokenizer trained on ``train_docs``: loaded from the cache, or trained and saved there."""
    settings = [kind, vocab_size, special_tokens]
    key = fingerprint("tokenizer", CACHE_VERSION, tokenizers.__version__, settings, documents_digest(train_docs))
    path = cache_dir / "tokenizers" / key / "tokenizer.json"
    if not path.is_file():
        texts = (doc.text for doc in train_docs)
        show = len(train_docs) >= PROGRESS_MIN_DOCS
        trained = train_tokenizer(texts, kind, vocab_size, special_tokens, show)  # type: ignore[arg-type]
        write_once(path, lambda f: f.write(trained.to_str(pretty=True).encode("utf-8")))
    return load_tokenizer(path), path  # reread: another process may have published first


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id below ``vocab_size``."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_documents(docs: Sequence[Document], tokenizer: Tokenizer, eos_id: int) -> Iterator[np.ndarray]:
    """Token ids of ``docs`` in chunks, each document followed by ``eos_id``."""
    # A loaded HF tokenizer.json may pad or truncate (BERT's truncates at 512); a corpus must not.
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.no_truncation()
    with tqdm(total=len(docs), desc="tokenizing", unit="doc", disable=len(docs) < PROGRESS_MIN_DOCS) as bar:
        for start in range(0, len(docs), ENCODE_CHUNK_DOCS):
            batch = docs[start : start + ENCODE_CHUNK_DOCS]
            ids: list[int] = []
            for encoding in plain.encode_batch([doc.text for doc in batch], add_special_tokens=False):
                ids.extend(encoding.ids)
                ids.append(eos_id)
            yield np.asarray(ids, dtype=np.int64)
            bar.update(len(batch))


def write_token_file(path: Path, docs: Sequence[Document], tokenizer: Tokenizer, eos_id: int) -> int:
    """Tokenize ``docs`` into the flat ``.bin`` at ``path`` (atomically); the token count."""
    dtype = token_dtype(tokenizer.get_vocab_size())
    count = 0

    def write(f: IO[bytes]) -> None:
        nonlocal count
        for ids in encode_documents(docs, tokenizer, eos_id):
            f.write(ids.astype(dtype).tobytes())
            count += len(ids)

    write_once(path, write)
    return count


def build_token_files(
    folder: Path, splits: dict[str, Sequence[Document]], tokenizer: Tokenizer, eos_id: int
) -> dict[str, Path]:
    """``<split>.bin`` for every split not already cached in ``folder``, plus ``meta.json``."""
    paths = {name: folder / f"{name}.bin" for name in splits}
    missing = [name for name, path in paths.items() if not path.is_file()]
    for name in missing:
        write_token_file(paths[name], splits[name], tokenizer, eos_id)
    if missing or not (folder / "meta.json").is_file():
        dtype = token_dtype(tokenizer.get_vocab_size())
        counts = {n: {"docs": len(d), "tokens": paths[n].stat().st_size // dtype.itemsize} for n, d in splits.items()}
        meta = {"dtype": dtype.name, "vocab_size": tokenizer.get_vocab_size(), "eos_id": eos_id, "splits": counts}
        write_once(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode("utf-8")))
    return paths


def open_tokens(path: Path, vocab_size: int) -> np.memmap:
    """The token ids of a ``.bin`` written by ``write_token_file``, memory-mapped read-only."""
    return np.memmap(path, dtype=token_dtype(vocab_size), mode="r")
