"""ClassificationDataModule: the embedded topic task, CSV/JSONL files, batches, errors."""

import csv
import json
import random

import pytest
import torch

from zoo.data.classification import ClassificationDataModule, stratified_split, topic_examples
from zoo.data.tokenizer import train_tokenizer
from zoo.errors import ZooError


def test_topic_task_is_deterministic_and_balanced():
    examples = topic_examples("pydoc", num_topics=5, min_paragraph_chars=80, max_per_topic=40)
    assert examples == topic_examples("pydoc", num_topics=5, min_paragraph_chars=80, max_per_topic=40)
    labels = {lab for _, lab in examples}
    assert len(labels) == 5 and all(sum(lab == t for _, lab in examples) == 40 for t in labels)
    assert all(len(text) >= 80 for text, _ in examples)
    assert len({text for text, _ in examples}) == len(examples)  # cleaning dropped repeated paragraphs


def test_stratified_split_keeps_every_label_and_never_overlaps():
    examples = [(f"text {i}", "ab"[i % 2] if i < 40 else "c") for i in range(50)]
    train, val = stratified_split(examples, 0.2, seed=3)
    assert sorted(train + val) == sorted(examples) and not set(train) & set(val)
    assert {lab for _, lab in val} == {"a", "b", "c"}
    assert sum(lab == "a" for _, lab in val) == 4
    assert (train, val) == stratified_split(examples, 0.2, seed=3)
    assert stratified_split(examples, 0.2, seed=4)[1] != val


@pytest.fixture
def tokenizer_file(tmp_path, text_maker):
    texts = [text_maker(random.Random(i)) for i in range(10)] + ["alpha beta gamma delta"]
    path = tmp_path / "tokenizer.json"
    train_tokenizer(texts, "unigram", 300).save(str(path))
    return str(path)


def write_rows(path, rows):
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_files_give_padded_batches(tmp_path, tokenizer_file, suffix):
    rows = [{"text": f"{'ka lo mi ' * (i % 5 + 1)}sample {i}", "label": ["alpha", "beta"][i % 2]} for i in range(20)]
    dm = ClassificationDataModule(train_file=write_rows(tmp_path / f"train{suffix}", rows), tokenizer=tokenizer_file,
                                  batch_size=8, max_length=12)
    assert dm.label_names == ["alpha", "beta"] and dm.num_labels == 2
    assert len(dm.examples("train")) == 16 and len(dm.examples("val")) == 4
    batch = next(iter(dm.train_dataloader()))
    B, T = batch["input_ids"].shape
    assert B == 8 and T <= 12
    lengths = batch["attention_mask"].sum(1)
    assert bool((batch["input_ids"][batch["attention_mask"] == 0] == dm.pad_token_id).all())
    assert all(batch["input_ids"][i, n - 1] == dm.eos_token_id for i, n in enumerate(lengths.tolist()))  # "A </s>"
    for label, target in zip(batch["labels"].tolist(), batch["target_ids"].tolist()):
        ids = [t for t in target if t != -100]
        assert ids == dm.label_target_ids()[label] and ids[-1] == dm.eos_token_id
        assert dm.tokenizer.decode(ids).strip() == dm.label_names[label]


def test_bad_files_get_clear_errors(tmp_path, tokenizer_file):
    train = write_rows(tmp_path / "train.csv", [{"sentence": "x", "label": "a"}])
    with pytest.raises(ZooError, match="text_field"):
        ClassificationDataModule(train_file=train, tokenizer=tokenizer_file).examples()
    train = write_rows(tmp_path / "t.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    val = write_rows(tmp_path / "v.jsonl", [{"text": "z", "label": "c"}])
    with pytest.raises(ZooError, match="labels"):
        ClassificationDataModule(train_file=train, val_file=val, tokenizer=tokenizer_file).examples()
    with pytest.raises(ZooError, match="does not exist"):
        ClassificationDataModule(train_file=str(tmp_path / "missing.csv")).examples()


def test_embedded_task_batches(tokenizer_file):
    dm = ClassificationDataModule(tokenizer=tokenizer_file, num_topics=4, max_per_topic=30, batch_size=16)
    assert dm.num_labels == 4 and sum(dm.label_counts("val").values()) == 4 * 6
    batch = next(iter(dm.val_dataloader()))
    assert batch["labels"].unique().numel() > 1  # validation is mixed, not sorted by label
    assert batch["input_ids"].shape[1] <= 128 and batch["input_ids"].dtype == torch.long
