"""ImageTextDataModule: the embedded digits, folders of images with captions.jsonl, tokenizers, bad input."""

import json
import sys
from pathlib import Path

import pytest
import torch

from zoo.data import ImageTextDataModule
from zoo.data.images import random_shift, stratified_split
from zoo.errors import ZooError

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits_dm():
    dm = ImageTextDataModule(image_size=16, batch_size=8, max_length=16)
    dm.setup("fit")
    return dm


def test_digits_batches(digits_dm):
    dm = digits_dm
    assert dm.class_names[7] == "seven" and len(dm.class_names) == 10
    assert all(t.count("{}") == 1 for t in dm.templates)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "labels"}
    assert batch["pixel_values"].shape == (8, 3, 16, 16) and batch["pixel_values"].dtype == torch.float32
    B, T = batch["input_ids"].shape
    assert B == 8 and batch["attention_mask"].shape == (B, T) and T <= dm.max_length
    assert int(batch["input_ids"].max()) < dm.model_vocab_size
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() == T  # padded to the longest caption of the batch
    for row, label in enumerate(batch["labels"].tolist()):
        ids = batch["input_ids"][row, : lengths[row]].tolist()
        assert ids[-1] == dm.eos_token_id and dm.eos_token_id not in ids[:-1]
        assert batch["input_ids"][row, lengths[row]:].eq(dm.pad_token_id).all()
        caption = dm.tokenizer.decode(ids)
        assert dm.class_names[label] in caption or str(label) in caption, caption


def test_digits_split_is_stratified_deterministic_and_disjoint(digits_dm):
    train, val = len(digits_dm.dataset("train")), len(digits_dm.dataset("val"))
    assert train + val == 1797 and 0.18 < val / 1797 < 0.22
    labels = torch.arange(100) % 10
    tr, va = stratified_split(labels, 0.2, seed=1)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(100))
    assert torch.bincount(labels[va]).tolist() == [2] * 10
    assert torch.equal(stratified_split(labels, 0.2, seed=1)[1], va)
    assert not torch.equal(stratified_split(labels, 0.2, seed=2)[1], va)
    # validation captions are fixed per example; training draws them anew
    val_set, train_set = digits_dm.dataset("val"), digits_dm.dataset("train")
    torch.manual_seed(0)
    assert len({tuple(val_set[3]["input_ids"].tolist()) for _ in range(20)}) == 1
    assert len({tuple(train_set[3]["input_ids"].tolist()) for _ in range(20)}) > 1


def test_tokenize_and_truncation(digits_dm):
    out = digits_dm.tokenize(["a handwritten seven", "one"])
    assert out["input_ids"].shape == out["attention_mask"].shape
    assert out["attention_mask"][1].tolist()[-1] == 0  # the short prompt is padded
    short = ImageTextDataModule(image_size=8, max_length=3)
    (ids,) = short.encode(["a photo of the digit seven"])
    assert len(ids) == 3 and ids[-1] == short.eos_token_id


def test_random_shift_keeps_the_shape():
    img = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6)
    assert random_shift(img, 2).shape == img.shape
    assert torch.equal(random_shift(img, 0), img)


def write_folder(root: Path, with_labels: bool = True) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(8):
        color = "red" if i % 2 else "blue"
        Image.new("RGB", (12 + i, 10), color).save(root / f"img{i}.png")
        for caption in (f"a {color} square", f"something {color}"):
            record = {"image": f"img{i}.png", "caption": caption}
            if with_labels:
                record["label"] = color
            lines.append(json.dumps(record))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_folder_source(tmp_path):
    pytest.importorskip("PIL")
    folder = write_folder(tmp_path / "pics")
    dm = ImageTextDataModule(source=str(folder), image_size=8, batch_size=4, val_fraction=0.25)
    assert dm.class_names == ["blue", "red"] and "{}" in dm.templates[0]
    dm.setup()
    train, val = dm.dataset("train"), dm.dataset("val")
    assert len(train) + len(val) == 16 and len(val) == 4  # 2 of 8 images, both captions of each
    assert not {str(p) for p in train.images} & {str(p) for p in val.images}
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 8, 8)
    red = torch.tensor([1.0, 0.0, 0.0])
    for pixels, label in zip(batch["pixel_values"], batch["labels"].tolist()):
        mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
        rgb = pixels[:, 4, 4] * std + mean
        assert torch.allclose(rgb, red if label == 1 else torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    # the same file named directly, without labels: no classes, labels -1
    unlabeled = write_folder(tmp_path / "plain", with_labels=False) / "captions.jsonl"
    dm = ImageTextDataModule(source=str(unlabeled), image_size=8, batch_size=4)
    assert dm.class_names == []
    assert set(next(iter(dm.train_dataloader()))["labels"].tolist()) == {-1}


def test_reusing_a_tokenizer_file(tmp_path, digits_dm):
    path = tmp_path / "tokenizer.json"
    digits_dm.tokenizer.save(str(path))
    dm = ImageTextDataModule(tokenizer=str(path), image_size=8)
    assert dm.model_vocab_size == digits_dm.model_vocab_size
    assert dm.encode(["a handwritten 7"]) == digits_dm.encode(["a handwritten 7"])


def test_wordpiece_tokenizer_keeps_a_single_end_of_text(tmp_path):
    from zoo.data.tokenizer import train_tokenizer

    tok = train_tokenizer(["a handwritten seven", "the digit one"] * 5, "wordpiece", 60)
    tok.save(str(tmp_path / "tokenizer.json"))
    dm = ImageTextDataModule(tokenizer=str(tmp_path), image_size=8)
    (ids,) = dm.encode(["a handwritten seven"])
    assert ids[0] == tok.token_to_id("[CLS]") and ids[-1] == dm.eos_token_id == tok.token_to_id("[SEP]")
    assert ids.count(dm.eos_token_id) == 1


def test_bad_input_gets_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ZooError, match="does not exist; pass --data.source digits"):
        ImageTextDataModule(source=str(tmp_path / "nowhere")).model_vocab_size
    with pytest.raises(ZooError, match="has no captions.jsonl"):
        ImageTextDataModule(source=str(tmp_path)).model_vocab_size
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "caption": "x"}\nnot json\n')
    with pytest.raises(ZooError, match="a.png.*does not exist; fix the path"):
        ImageTextDataModule(source=str(bad)).model_vocab_size
    (tmp_path / "a.png").write_bytes(b"not an image")
    with pytest.raises(ZooError, match=r"bad.jsonl:2 is not a JSON object"):
        ImageTextDataModule(source=str(bad)).model_vocab_size
    bad.write_text('{"image": "a.png", "caption": "x"}\n{"image": "a.png", "caption": "y"}\n')
    with pytest.raises(ZooError, match="one image"):
        ImageTextDataModule(source=str(bad)).setup()
    for kwargs, key in (({"val_fraction": 1.5}, "val_fraction"), ({"batch_size": 1}, "batch_size"),
                        ({"templates": ["no slot"]}, "templates")):
        with pytest.raises(ZooError, match=key):
            ImageTextDataModule(**kwargs)


def test_unreadable_image_and_missing_pillow(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from zoo.data.images import load_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ZooError, match="cannot read image .*broken.png"):
        load_image(broken, 8)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ZooError, match="pip install pillow"):
        load_image(broken, 8)
