"""The one stratified split (zoo.data.split) behind classification rows and image labels.

The pinned lists and digests were computed with the per-module splits that stood in
zoo/data/classification.py and zoo/data/images.py before they were merged: the merged function
must hold out exactly the same examples, CLIP digits included.
"""

import hashlib
import random
from collections import Counter

import pytest
import torch

from zoo.data import classification, images
from zoo.data.sources import Document
from zoo.data.split import split_documents, stratified_split, unit_hash

CLASSIFICATION_TRAIN = [
    "example 14", "example 20", "example 28", "example 15", "example 5", "example 23", "example 3", "example 24",
    "example 26", "example 18", "example 21", "lonely", "example 19", "example 7", "example 22", "example 17",
    "example 8", "example 30", "example 0", "example 16", "example 25", "example 6", "example 13", "example 29",
    "example 1",
]
CLASSIFICATION_VAL = ["example 4", "example 12", "example 10", "example 27", "example 9", "example 11", "example 2"]
IMAGE_TRAIN = [3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 18, 19, 20, 21, 22, 24, 25]
IMAGE_VAL = [0, 1, 2, 6, 7, 16, 17, 23]
DIGITS_VAL_SHA256 = "873676259ae52f56e2dfdfcc56e57c5d097e2fe67ad477f86e82eb30d98f12df"  # 359 of 1797, seed 1234
TOPIC_VAL_SHA256 = "7eb55c88d70812f516531a5468f627b9457f371aedf1ab7fce5044db17bb9b86"  # 24 of 120, seed 1234


def examples_abc():
    return [(f"example {i}", "abc"[i % 3]) for i in range(31)] + [("lonely", "d")]


def test_classification_split_equals_the_old_one():
    train, val = classification.stratified_split(examples_abc(), 0.25, seed=5)
    assert [t for t, _ in train] == CLASSIFICATION_TRAIN and [t for t, _ in val] == CLASSIFICATION_VAL


def test_image_split_equals_the_old_one():
    labels = torch.tensor([(i * 7) % 4 for i in range(26)])
    train, val = images.stratified_split(labels, 0.3, seed=11)
    assert train.tolist() == IMAGE_TRAIN and val.tolist() == IMAGE_VAL
    assert train.dtype == val.dtype == torch.long


def test_clip_digits_hold_out_the_same_images():
    sklearn = pytest.importorskip("sklearn.datasets")
    labels = torch.tensor(sklearn.load_digits().target)
    _, val = images.stratified_split(labels, 0.2, 1234)  # ImageTextDataModule's defaults
    assert len(val) == 359 and hashlib.sha256(str(val.tolist()).encode()).hexdigest() == DIGITS_VAL_SHA256


def test_embedded_topic_task_holds_out_the_same_paragraphs():
    examples = classification.topic_examples("pydoc", num_topics=4, max_per_topic=30)
    _, val = classification.stratified_split(examples, 0.2, 1234)
    assert len(val) == 24 and hashlib.sha256("\0".join(t for t, _ in val).encode()).hexdigest() == TOPIC_VAL_SHA256


def test_unit_hash_keeps_the_old_values():
    assert unit_hash(3, "images/cat.png") == 0.39382075390107163  # images' folder split
    assert unit_hash(3, "images/cat.png", byteorder="little") == 0.2660940582522351  # classification's
    docs = [Document(f"doc{i}", "x" * (10 + i * 3)) for i in range(20)]
    assert [d.id for d in split_documents(docs, 0.2, seed=9)[1]] == ["doc4", "doc5", "doc6", "doc10", "doc16"]


@pytest.mark.parametrize("use_scores", [False, True])
def test_every_label_split_in_proportion_disjoint_and_complete(use_scores):
    rng = random.Random(0)
    sizes = {"a": 50, "b": 20, "c": 7, "d": 2, "e": 1}
    labels = [lab for lab, n in sizes.items() for _ in range(n)]
    rng.shuffle(labels)
    scores = [rng.random() for _ in labels] if use_scores else None
    train, val = stratified_split(labels, 0.2, seed=3, scores=scores)
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())
    held = Counter(labels[i] for i in val.tolist())
    # round(0.2 n), at least one, never the whole label; a lone example stays in train
    assert held == {"a": 10, "b": 4, "c": 1, "d": 1}
    kept = Counter(labels[i] for i in train.tolist())
    assert kept == {"a": 40, "b": 16, "c": 6, "d": 1, "e": 1}


def test_never_holds_out_a_whole_label():
    train, val = stratified_split(["x", "x", "y", "y", "y"], 0.9, seed=0)
    assert len(val) == 3 and Counter(["x", "x", "y", "y", "y"][i] for i in train.tolist()) == {"x": 1, "y": 1}


def test_deterministic_and_seeded():
    labels = [i % 4 for i in range(80)]
    assert all(torch.equal(a, b) for a, b in zip(stratified_split(labels, 0.25, 7), stratified_split(labels, 0.25, 7)))
    assert not torch.equal(stratified_split(labels, 0.25, 7)[1], stratified_split(labels, 0.25, 8)[1])
    assert torch.equal(stratified_split(torch.tensor(labels), 0.25, 7)[1], stratified_split(labels, 0.25, 7)[1])


def test_scores_make_the_split_independent_of_order():
    texts = [f"row {i}" for i in range(40)]
    labels = [i % 2 for i in range(40)]
    _, val = stratified_split(labels, 0.3, 0, scores=[unit_hash(1, t) for t in texts])
    order = list(range(40))
    random.Random(1).shuffle(order)
    shuffled_scores = [unit_hash(1, texts[i]) for i in order]
    _, shuffled_val = stratified_split([labels[i] for i in order], 0.3, 0, scores=shuffled_scores)
    assert {texts[i] for i in val.tolist()} == {texts[order[i]] for i in shuffled_val.tolist()}
