"""Corpus sources: pydoc, files, folders, globs, JSONL, Hugging Face, and their bad inputs."""

import json
import sys

import pytest

from zoo.data.sources import Document, load_documents, pydoc_documents
from zoo.errors import ZooError


def assert_one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_pydoc_default_has_one_document_per_topic_with_ids():
    from pydoc_data.topics import topics

    docs = load_documents()
    assert docs == pydoc_documents()
    assert len(docs) == len(topics) > 50  # 79 on CPython 3.11; the count varies by version
    assert [d.id for d in docs] == list(topics)
    assert all(isinstance(d, Document) and d.text for d in docs)
    assert dict(docs)["assert"].startswith('The "assert" statement')


def test_single_file_is_one_document_without_bom(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffhello wörld\nline two\n".encode("utf-8"))
    assert load_documents(str(path)) == [Document("notes.txt", "hello wörld\nline two\n")]


def test_folder_reads_nested_files_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "two.md").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / ".hidden.txt").write_text("no")
    (tmp_path / ".git" / "config").write_text("no")
    docs = load_documents(str(tmp_path))
    assert docs == [Document("a.txt", "first"), Document("b/two.md", "second")]


def test_glob_matches_only_the_pattern(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.txt").write_text("x")
    (tmp_path / "y.md").write_text("y")
    (tmp_path / "sub" / "z.txt").write_text("z")
    flat = load_documents(str(tmp_path / "*.txt"))
    assert [d.text for d in flat] == ["x"]
    deep = load_documents(str(tmp_path / "**" / "*.txt"))
    assert sorted(d.text for d in deep) == ["x", "z"]


def test_jsonl_with_text_field_and_ids(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"id": "first", "body": "alpha"}, {"body": "beta", "other": 1}]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    docs = load_documents(str(path), text_field="body")
    assert docs == [Document("first", "alpha"), Document("data.jsonl:3", "beta")]


def test_jsonl_inside_a_folder_is_read_as_jsonl(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"text": "from json"}\n')
    (tmp_path / "plain.txt").write_text("plain")
    texts = sorted(d.text for d in load_documents(str(tmp_path)))
    assert texts == ["from json", "plain"]


def test_missing_path_names_it(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(ZooError) as excinfo:
        load_documents(missing)
    assert_one_line_error(excinfo, missing, "does not exist")


def test_glob_without_matches(tmp_path):
    pattern = str(tmp_path / "*.txt")
    with pytest.raises(ZooError) as excinfo:
        load_documents(pattern)
    assert_one_line_error(excinfo, pattern, "matched no files")


def test_empty_folder(tmp_path):
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(tmp_path))
    assert_one_line_error(excinfo, str(tmp_path), "no (non-hidden) files")


def test_binary_file_with_nul_bytes(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04\x00\x00binary\x00stuff")
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(path))
    assert_one_line_error(excinfo, str(path), "binary")


def test_binary_file_of_control_characters(tmp_path):
    path = tmp_path / "noise.dat"
    path.write_bytes(bytes(range(1, 32)) * 20)
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(path))
    assert_one_line_error(excinfo, str(path), "binary")


def test_binary_file_inside_a_folder_is_named(tmp_path):
    (tmp_path / "ok.txt").write_text("fine text")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(tmp_path))
    assert_one_line_error(excinfo, "image.png", "binary")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(path))
    assert_one_line_error(excinfo, str(path), "not valid UTF-8", "0xe9", "iconv")


def test_jsonl_missing_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n{"content": "no text field"}\n')
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(path))
    assert_one_line_error(excinfo, f"{path}:2", "'text'", "'content'", "--data.text_field")


def test_jsonl_bad_json_and_bad_types(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(bad))
    assert_one_line_error(excinfo, f"{bad}:1", "not valid JSON")
    number = tmp_path / "number.jsonl"
    number.write_text('{"text": 5}\n')
    with pytest.raises(ZooError) as excinfo:
        load_documents(str(number))
    assert_one_line_error(excinfo, f"{number}:1", "not a string")


def test_hf_source_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ZooError) as excinfo:
        load_documents("hf:wikitext:wikitext-2-raw-v1")
    assert_one_line_error(excinfo, "pip install datasets")


def test_hf_source_without_a_name():
    with pytest.raises(ZooError) as excinfo:
        load_documents("hf:")
    assert_one_line_error(excinfo, "hf:NAME")
