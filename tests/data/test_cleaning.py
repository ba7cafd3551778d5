"""Cleaning rules one by one, and the counts report."""

import pytest

from zoo.data.cleaning import CleaningReport, clean_documents, normalize_text, require_documents
from zoo.data.sources import Document
from zoo.errors import ZooError

LONG = "This paragraph is long enough to be deduplicated across the whole corpus."


def test_nfc():
    assert normalize_text("cafe\u0301") == "caf\u00e9"


def test_control_characters_removed_tab_and_newline_kept():
    assert normalize_text("a\x00b\x07c\td\x1be\x7f\nf") == "abc\tde\nf"


def test_carriage_returns_become_newlines():
    assert normalize_text("one\r\ntwo\rthree\u2028four") == "one\ntwo\nthree\nfour"


def test_spaces_collapsed_inside_lines_trailing_stripped_indentation_kept():
    text = "a   b\u00a0\u00a0c   \n    indented  code  \t\n\tx"
    assert normalize_text(text) == "a b c\n    indented code\n\tx"


def test_at_most_one_blank_line_and_no_outer_blank_lines():
    assert normalize_text("\n\n a\n\n\n\nb\n \t \n  \nc\n\n") == " a\n\nb\n\nc"


def test_duplicate_documents_dropped_first_id_kept():
    docs = [Document("a", "Same text here, long enough."), Document("b", "Same  text here, long enough.  ")]
    kept, report = clean_documents(docs, min_chars=5)
    assert [d.id for d in kept] == ["a"]
    assert report.duplicate_docs == 1 and report.docs_out == 1


def test_duplicate_paragraphs_removed_short_boilerplate_kept():
    docs = [
        Document("a", f"Note:\n\n{LONG}\n\nOnly in a."),
        Document("b", f"Note:\n\n{LONG}\n\nOnly in b."),
    ]
    kept, report = clean_documents(docs, min_chars=5)
    assert kept[0].text == f"Note:\n\n{LONG}\n\nOnly in a."
    assert kept[1].text == "Note:\n\nOnly in b."
    assert report.duplicate_paragraphs == 1


def test_dedup_off_keeps_duplicates():
    docs = [Document("a", LONG), Document("b", LONG)]
    kept, report = clean_documents(docs, min_chars=5, dedup=False)
    assert len(kept) == 2 and report.duplicate_docs == 0


def test_min_chars_and_empty_counts():
    docs = [Document("empty", " \n\x00\n "), Document("short", "tiny"), Document("ok", LONG)]
    kept, report = clean_documents(docs, min_chars=10)
    assert [d.id for d in kept] == ["ok"]
    assert report == CleaningReport(
        docs_in=3,
        docs_out=1,
        dropped_empty=1,
        dropped_short=1,
        duplicate_docs=0,
        duplicate_paragraphs=0,
        chars_in=len(" \n\x00\n ") + 4 + len(LONG),
        chars_out=len(LONG),
    )
    summary = report.summary()
    assert "3 docs in -> 1 kept" in summary and "1 empty" in summary and "1 too short" in summary


def test_document_made_only_of_duplicate_paragraphs_is_dropped_as_empty():
    docs = [Document("a", LONG), Document("b", f"{LONG}\n\n{LONG}")]
    kept, report = clean_documents(docs, min_chars=5)
    assert [d.id for d in kept] == ["a"]
    assert report.dropped_empty == 1
    assert report.duplicate_paragraphs == 0  # counted only in documents that were kept


def test_pydoc_cleaning_report():
    from zoo.data.sources import pydoc_documents

    kept, report = clean_documents(pydoc_documents())
    from pydoc_data.topics import topics

    assert report.docs_in == len(topics)
    assert report.docs_out == len(kept) == len(topics) - report.duplicate_docs - report.dropped_short - report.dropped_empty
    assert report.chars_out == sum(len(d.text) for d in kept) < report.chars_in
    assert all("\r" not in d.text and "\n\n\n" not in d.text for d in kept)


def test_require_documents_explains_empty_corpus():
    _, report = clean_documents([Document("x", "short")], min_chars=32)
    with pytest.raises(ZooError) as excinfo:
        require_documents([], report, "notes/", 32)
    message = str(excinfo.value)
    assert "notes/" in message and "min_chars=32" in message and "\n" not in message
    with pytest.raises(ZooError, match="holds no documents"):
        require_documents([], CleaningReport(), "empty.jsonl", 32)
    _, blank = clean_documents([Document("a", "  \n "), Document("b", "")])
    with pytest.raises(ZooError, match=r"'blank/' is empty \(no text in its 2 document\(s\)\); add text"):
        require_documents([], blank, "blank/", 32)
