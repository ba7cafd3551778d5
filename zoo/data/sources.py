"""Corpus sources: where the documents come from.

A document is an ``(id, text)`` pair. ``load_documents(source)`` takes one string:

- ``"pydoc"`` (the default): the Python documentation topics every install carries
  (``pydoc_data.topics``), one document per topic, the topic name as id. A classification task
  uses that id as the label ("which documentation topic does this paragraph come from").
- a path to a text file (one document), a folder (every non-hidden file below it, one document
  each), or a glob such as ``"notes/**/*.md"``;
- a ``.jsonl`` file: one JSON object per line, the text under ``text_field``, the id under
  ``"id"`` when present (else ``file:line``);
- ``"hf:NAME[:CONFIG]"``: a Hugging Face dataset split ``hf_split`` (needs ``datasets``).

Every failure is a ``ZooError`` naming the path and the fix: a missing path, a glob with no
matches, a binary or non-UTF-8 file, a JSONL line that is not an object with the text field.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import NamedTuple

from zoo.errors import ZooError

PYDOC = "pydoc"
HF_PREFIX = "hf:"
JSONL_SUFFIXES = (".jsonl",)
_GLOB_CHARS = ("*", "?", "[")
# Above this share of control characters a NUL-free, decodable file is still not prose.
_MAX_CONTROL_SHARE = 0.10
_SOURCE_HINT = "pass 'pydoc', a text file, a folder, a glob like 'texts/*.txt', a .jsonl file or 'hf:NAME'"


class Document(NamedTuple):
    """One document: a stable id (topic name, file path, ``file:line``) and its text."""

    id: str
    text: str


def load_documents(source: str = PYDOC, text_field: str = "text", hf_split: str = "train") -> list[Document]:
    """Read every document of ``source`` (see the module docstring for the accepted forms)."""
    if source == PYDOC:
        return pydoc_documents()
    if source.startswith(HF_PREFIX):
        return hf_documents(source[len(HF_PREFIX) :], text_field, hf_split)
    path = Path(source).expanduser()
    if path.is_dir():
        return _files_documents(_folder_files(path), path, text_field)
    if path.is_file():
        return _file_documents(path, path.name, text_field)
    if any(ch in source for ch in _GLOB_CHARS):
        return _files_documents(_glob_files(source), None, text_field)
    raise ZooError(f"data source {source!r} does not exist; {_SOURCE_HINT}")


def pydoc_documents() -> list[Document]:
    """The Python documentation topics (79 on CPython 3.11), id = topic name, in the module's order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # some distro builds strip pydoc_data
        raise ZooError(
            "this Python has no pydoc_data module for the default corpus; "
            "point --data.source at your own text files"
        ) from err
    return [Document(name, text) for name, text in topics.items()]


def hf_documents(spec: str, text_field: str = "text", split: str = "train") -> list[Document]:
    """A Hugging Face dataset ``NAME[:CONFIG]`` split, one document per row (needs ``datasets``)."""
    name, _, config = spec.partition(":")
    if not name:
        raise ZooError("data source 'hf:' names no dataset; write it as 'hf:NAME' or 'hf:NAME:CONFIG'")
    try:
        import datasets
    except ImportError as err:
        raise ZooError(
            f"data source 'hf:{spec}' needs the Hugging Face `datasets` package; "
            "install it with `pip install datasets`"
        ) from err
    try:
        table = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # datasets raises many types; the message is what matters
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ZooError(
            f"cannot load Hugging Face dataset {name!r} (config {config or None!r}, split {split!r}): "
            f"{reason}; check the name, the config and --data.hf_split"
        ) from err
    if text_field not in table.column_names:
        raise ZooError(
            f"Hugging Face dataset {name!r} has no column {text_field!r} (columns: "
            f"{', '.join(table.column_names)}); set --data.text_field to the text column"
        )
    return [Document(f"{name}/{split}/{i}", text or "") for i, text in enumerate(table[text_field])]


def read_text_file(path: Path) -> str:
    """The UTF-8 text of ``path``; a ZooError for unreadable, binary or non-UTF-8 files."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ZooError(f"cannot read {path}: {err.strerror}; check the path and its permissions") from err
    if b"\x00" in data:
        raise ZooError(
            f"{path} looks binary (it contains NUL bytes; UTF-16 text does too); "
            "use UTF-8 text files only, e.g. a glob like 'DIR/**/*.txt'"
        )
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading byte-order mark is not text
    except UnicodeDecodeError as err:
        raise ZooError(
            f"{path} is not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"re-encode it, e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`"
        ) from err
    if _control_share(text) > _MAX_CONTROL_SHARE:
        raise ZooError(
            f"{path} looks binary (mostly control characters, not text); "
            "use UTF-8 text files only, e.g. a glob like 'DIR/**/*.txt'"
        )
    return text


def _control_share(text: str, sample: int = 65536) -> float:
    head = text[:sample]
    if not head:
        return 0.0
    controls = sum(1 for ch in head if ord(ch) < 32 and ch not in "\n\t\r\f")
    return controls / len(head)


def read_jsonl(path: Path, text_field: str = "text", id_prefix: str | None = None) -> list[Document]:
    """One document per non-blank JSONL line: text from ``text_field``, id from ``"id"``."""
    prefix = id_prefix if id_prefix is not None else path.name
    docs = []
    for lineno, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ZooError(f"{path}:{lineno} is not valid JSON ({err.msg}); fix or delete that line") from err
        if not isinstance(record, dict):
            raise ZooError(f"{path}:{lineno} is not a JSON object; write one {{{text_field!r}: ...}} object per line")
        if text_field not in record:
            fields = ", ".join(map(repr, record)) or "none"
            raise ZooError(
                f"{path}:{lineno} has no field {text_field!r} (fields: {fields}); "
                "set --data.text_field to the field that holds the text"
            )
        text = record[text_field]
        if not isinstance(text, str):
            kind = type(text).__name__
            raise ZooError(f"{path}:{lineno} field {text_field!r} holds a {kind}, not a string; store the text there")
        doc_id = str(record["id"]) if "id" in record else f"{prefix}:{lineno}"
        docs.append(Document(doc_id, text))
    return docs


def text_files(source: str) -> list[Path]:
    """The files a path, folder or glob ``source`` names (sorted; hidden files left out)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_files(path)
    if path.is_file():
        return [path]
    if any(ch in source for ch in _GLOB_CHARS):
        return _glob_files(source)
    raise ZooError(f"data source {source!r} does not exist; {_SOURCE_HINT}")


def _file_documents(path: Path, doc_id: str, text_field: str) -> list[Document]:
    if path.name.endswith(JSONL_SUFFIXES):
        return read_jsonl(path, text_field, doc_id)
    return [Document(doc_id, read_text_file(path))]


def _files_documents(files: list[Path], base: Path | None, text_field: str) -> list[Document]:
    docs = []
    for path in files:
        doc_id = path.relative_to(base).as_posix() if base is not None else path.as_posix()
        docs.extend(_file_documents(path, doc_id, text_field))
    return docs


def _folder_files(root: Path) -> list[Path]:
    # Hidden files and folders (.git, .DS_Store) are tooling, never corpus.
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ZooError(
            f"folder {root} has no (non-hidden) files; put text files in it or point --data.source elsewhere"
        )
    return files


def _glob_files(pattern: str) -> list[Path]:
    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise ZooError(
            f"glob {pattern!r} matched no files; check the pattern (use '**' for subfolders and quote it in the shell)"
        )
    return files
