"""Image-text pairs for contrastive pre-training (CLIP, Radford et al., 2021).

Two sources:

- ``"digits"`` (the default): scikit-learn's 1,797 handwritten 8×8 digits, shipped inside
  scikit-learn (no download), upscaled to ``image_size`` and given three channels, with captions
  drawn from several templates ("a photo of the digit seven", "a handwritten 7", ...). The
  held-out split is a seeded permutation, stratified by digit. Zero-shot evaluation prompts
  ``templates`` × ``class_names`` (Radford et al., 2021, §3.1.4).
- a folder of images with a ``captions.jsonl`` (or the .jsonl file itself), one
  ``{"image": "relative/path.png", "caption": "...", "label": "optional class"}`` per line.
  Images are read with Pillow, resized on the short side and center-cropped. The split hashes
  the image path, so captions of one image never straddle train and validation.

Captions are tokenized (a byte-level BPE trained on the training captions, or a tokenizer.json
reused from a text model), end with the end-of-text token the text tower pools at, and are
padded per batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from zoo.data.sampling import evaluation_loader, resumable_loader
from zoo.data.split import stratified_split, unit_hash
from zoo.data.tokenized import TokenizerMixin
from zoo.data.tokenizer import train_tokenizer
from zoo.errors import ZooError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's pixel statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_CAPTIONS = (
    "a photo of the digit {name}", "a handwritten {digit}", "the number {digit} written by hand",
    "a drawing of the number {name}", "the digit {digit}", "a scan of a handwritten {name}",
    "a blurry picture of a {name}", "{name}",
)
DIGIT_TEMPLATES = ("a photo of the digit {}", "a drawing of the number {}", "a scan of a handwritten {}")
FOLDER_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.")
CAPTION_FILES = ("captions.jsonl", "metadata.jsonl")


@dataclass
class ImageText:
    """One pair from a caption file: the image path, its caption and an optional class label."""

    image: Path
    caption: str
    label: Optional[str] = None


# ----------------------------------------------------------------------------- images
def normalize(images: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) in [0, 1] → standardised with CLIP's channel statistics."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (images - mean) / std


def digits(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as normalised (1797, 3, S, S) float images and (1797,) labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ZooError("the digits data set ships with scikit-learn; pip install scikit-learn "
                       "(or point --data.source at your own images)") from None
    data = load_digits()
    pixels = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return normalize(pixels.expand(-1, 3, -1, -1).contiguous()), torch.tensor(data.target, dtype=torch.long)


def digit_captions(label: int) -> list[str]:
    """Every caption template filled in for one digit."""
    return [t.format(name=DIGIT_NAMES[label], digit=label) for t in DIGIT_CAPTIONS]


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """An image file → normalised (3, S, S): short side resized to S, then center-cropped."""
    try:
        from PIL import Image
    except ImportError:
        raise ZooError("reading image files needs Pillow; pip install pillow") from None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = image_size / min(img.size)
            w, h = max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))
            img = img.resize((w, h), Image.Resampling.BICUBIC)
            left, top = (w - image_size) // 2, (h - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except OSError as err:
        raise ZooError(f"cannot read image '{path}' ({err}); replace or remove it from the caption file") from None
    return normalize(data.view(image_size, image_size, 3).permute(2, 0, 1).float() / 255.0)


# ----------------------------------------------------------------------------- caption files
def caption_file(source: str) -> Path:
    """The .jsonl named by ``source``: the file itself, or captions.jsonl / metadata.jsonl in a folder."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in CAPTION_FILES:
            if (path / name).is_file():
                return path / name
        raise ZooError(f"folder '{path}' has no captions.jsonl; write one "
                       '{"image": "relative/path.png", "caption": "..."} per line there')
    raise ZooError(f"image-text source '{source}' does not exist; pass --data.source digits, "
                   "a folder holding captions.jsonl, or a .jsonl file")


def read_caption_file(file: Path) -> list[ImageText]:
    """Parse and check every line (image paths are relative to the file's folder)."""
    pairs = []
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            image, caption = record["image"], record["caption"]
            if not (isinstance(image, str) and isinstance(caption, str)):
                raise TypeError("image and caption must be strings")
        except (ValueError, KeyError, TypeError) as err:
            raise ZooError(f"{file}:{lineno} is not a JSON object with string \"image\" and \"caption\" "
                           f"({type(err).__name__}: {err}); fix that line") from None
        path = (file.parent / image).resolve()
        if not path.is_file():
            raise ZooError(f"image '{path}' (line {lineno} of {file}) does not exist; "
                           f"fix the path, which is relative to {file.parent}")
        label = record.get("label")
        pairs.append(ImageText(path, caption, None if label is None else str(label)))
    if len(pairs) < 2:
        raise ZooError(f"{file} lists {len(pairs)} image-caption pairs; a train/validation split needs at least two")
    return pairs


# ----------------------------------------------------------------------------- dataset
class ImageTextDataset(Dataset):
    """Items: ``{"pixel_values" (3, S, S), "input_ids" (T,), "labels" ()}``.

    Each example has one or more tokenized captions; training draws one at random every time
    (caption templates act as text augmentation), evaluation takes a fixed one per index.
    """

    def __init__(self, images, captions: list[list[list[int]]], labels: list[int], train: bool, image_size: int = 0,
                 max_shift: int = 0):
        self.images, self.captions, self.labels = images, captions, labels
        self.train, self.image_size, self.max_shift = train, image_size, max_shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        choices = self.captions[i]
        pick = int(torch.randint(len(choices), ())) if self.train else i % len(choices)
        pixels = self.images[i] if isinstance(self.images, torch.Tensor) else load_image(self.images[i], self.image_size)
        if self.train and self.max_shift > 0:
            pixels = random_shift(pixels, self.max_shift)
        return {"pixel_values": pixels, "input_ids": torch.tensor(choices[pick]), "labels": torch.tensor(self.labels[i])}


def random_shift(image: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate (C, H, W) by up to ±max_shift pixels each way, repeating the border into the gap."""
    H, W = image.shape[-2:]
    dy, dx = (int(v) for v in torch.randint(0, 2 * max_shift + 1, (2,)))
    padded = F.pad(image[None], (max_shift,) * 4, mode="replicate")[0]
    return padded[:, dy : dy + H, dx : dx + W]


def pad_batch(ids: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest: (input_ids (B, T), attention_mask (B, T), 1 = real)."""
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)], mask[row, : len(x)] = x, 1
    return input_ids, mask


class Collate:
    """Stack images and labels, pad captions (a class, so DataLoader workers can pickle it)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        input_ids, mask = pad_batch([x["input_ids"] for x in items], self.pad_id)
        return {"pixel_values": torch.stack([x["pixel_values"] for x in items]), "input_ids": input_ids,
                "attention_mask": mask, "labels": torch.stack([x["labels"] for x in items])}


# ----------------------------------------------------------------------------- data module
class ImageTextDataModule(TokenizerMixin, LightningDataModule):
    """Image-caption pairs for contrastive training and zero-shot evaluation.

    Batches are ``{"pixel_values": FloatTensor[B, 3, S, S], "input_ids": LongTensor[B, T],
    "attention_mask": LongTensor[B, T], "labels": LongTensor[B]}``: captions end with the
    end-of-text token and are right-padded to the longest in the batch; ``labels`` is the class
    index (-1 where the source has no classes).

    Args:
        source: "digits" (scikit-learn's handwritten digits, no download), a folder holding
            captions.jsonl, or a .jsonl file of {"image": relative path, "caption": text,
            "label": optional class name} lines.
        tokenizer: Path to a tokenizer.json (or a folder holding one, e.g. a text model's run,
            or a zoo .ckpt carrying one) to reuse; unset trains a byte-level BPE on the training captions.
        vocab_size: Size of the BPE trained when `tokenizer` is unset (special tokens included).
        image_size: Side of the square images fed to the model, in pixels.
        max_length: Longest caption in tokens, end-of-text included (longer ones are cut).
        batch_size: Pairs per batch (per process); contrastive learning likes it large.
        val_fraction: Share of the pairs held out for validation and zero-shot evaluation.
        seed: Seed of the split and of the training shuffle.
        num_workers: DataLoader worker processes (0 loads in the main process).
        templates: Zero-shot prompt templates with one "{}" for the class name; default: a
            few caption-style prompts for digits, "a photo of a {}." style for folders.
    """

    tokenizer_name = "caption tokenizer"

    def __init__(
        self,
        source: str = "digits",
        tokenizer: Optional[str] = None,
        vocab_size: int = 512,
        image_size: int = 32,
        max_length: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 1234,
        num_workers: int = 0,
        templates: Optional[list[str]] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        _check_arguments(image_size, max_length, batch_size, val_fraction, num_workers, templates)
        self.source, self.tokenizer_file, self.vocab_size = source, tokenizer, vocab_size
        self.image_size, self.max_length, self.batch_size = image_size, max_length, batch_size
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self._templates = list(templates) if templates is not None else None
        self._pairs: Optional[list[ImageText]] = None
        self._datasets: dict[str, ImageTextDataset] = {}

    # ------------------------------------------------------------- source description
    @property
    def is_digits(self) -> bool:
        return self.source == "digits"

    def pairs(self) -> list[ImageText]:
        """The caption file's pairs (folder sources only), parsed and checked once."""
        if self._pairs is None:
            self._pairs = read_caption_file(caption_file(self.source))
        return self._pairs

    @property
    def class_names(self) -> list[str]:
        """Class names for zero-shot evaluation, in label order (empty when the source has none)."""
        if self.is_digits:
            return list(DIGIT_NAMES)
        return sorted({p.label for p in self.pairs() if p.label is not None})

    @property
    def templates(self) -> list[str]:
        """Zero-shot prompt templates, each with one "{}" for the class name."""
        if self._templates is not None:
            return self._templates
        return list(DIGIT_TEMPLATES if self.is_digits else FOLDER_TEMPLATES)

    def _folder_split(self) -> tuple[list[int], list[int]]:
        """Images ranked by a seeded hash of their path, the first share held out with all their captions."""
        images = sorted({str(p.image) for p in self.pairs()}, key=lambda key: (unit_hash(self.seed, key), key))
        if len(images) < 2:
            raise ZooError(f"all pairs of '{self.source}' show one image; a train/validation split needs two or more")
        held = set(images[: min(len(images) - 1, max(1, round(self.val_fraction * len(images))))])
        split = [str(p.image) in held for p in self.pairs()]
        return [i for i, v in enumerate(split) if not v], [i for i, v in enumerate(split) if v]

    # ------------------------------------------------------------- tokenizer
    def training_captions(self) -> list[str]:
        if self.is_digits:
            return [c for label in range(10) for c in digit_captions(label)]
        train, _ = self._folder_split()
        return [self.pairs()[i].caption for i in train]

    def build_tokenizer(self) -> tuple[Tokenizer, None]:
        """A byte-level BPE trained on the training captions (in memory: it is small and quick)."""
        return train_tokenizer(self.training_captions(), "bpe", self.vocab_size), None

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, ending with end-of-text, at most `max_length` long."""
        eos = self.eos_token_id
        out = []
        for enc in self.tokenizer.encode_batch(list(texts)):
            ids = list(enc.ids)
            if not ids or ids[-1] != eos:
                ids.append(eos)
            out.append(ids if len(ids) <= self.max_length else ids[: self.max_length - 1] + [eos])
        return out

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts → padded ``{"input_ids", "attention_mask"}`` (the zero-shot prompts use this)."""
        input_ids, mask = pad_batch([torch.tensor(ids) for ids in self.encode(texts)], self.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": mask}

    # ------------------------------------------------------------- datasets and loaders
    def setup(self, stage: Optional[str] = None) -> None:
        if self._datasets:
            return
        if self.is_digits:
            images, labels = digits(self.image_size)
            captions = {c: self.encode(digit_captions(c)) for c in range(10)}
            for name, index in zip(("train", "val"), stratified_split(labels, self.val_fraction, self.seed)):
                self._datasets[name] = ImageTextDataset(
                    images[index], [captions[int(labels[i])] for i in index], labels[index].tolist(), name == "train")
        else:
            pairs, classes = self.pairs(), {name: i for i, name in enumerate(self.class_names)}
            encoded = self.encode([p.caption for p in pairs])
            for name, index in zip(("train", "val"), self._folder_split()):
                self._datasets[name] = ImageTextDataset(
                    [pairs[i].image for i in index], [[encoded[i]] for i in index],
                    [classes.get(pairs[i].label, -1) for i in index], name == "train", self.image_size)
        rank_zero_info(f"image-text data {self.source!r}: {len(self._datasets['train'])} train / "
                       f"{len(self._datasets['val'])} val pairs")

    def dataset(self, split: str) -> ImageTextDataset:
        """The "train" or "val" dataset ("test" is the validation split)."""
        self.setup()
        return self._datasets["val" if split == "test" else split]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        kwargs = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                  "collate_fn": Collate(self.pad_token_id)}
        if shuffle:  # seeded, sharded over ranks, resumable mid-epoch
            # Contrastive batches must be full-size on every rank: drop the short last training batch.
            return resumable_loader(dataset, self.batch_size, self.seed, self.trainer,
                                    drop_last=len(dataset) > self.batch_size, **kwargs)
        return evaluation_loader(dataset, self.batch_size, self.seed, **kwargs)


def _check_arguments(image_size, max_length, batch_size, val_fraction, num_workers, templates) -> None:
    """Catch impossible settings at construction, with the key to change."""
    for name, value, low in (("image_size", image_size, 1), ("max_length", max_length, 2),
                             ("batch_size", batch_size, 2), ("num_workers", num_workers, 0)):
        if value < low:
            raise ZooError(f"{name}={value} must be at least {low}; set --data.{name}")
    if not 0.0 < val_fraction < 1.0:
        raise ZooError(f"val_fraction={val_fraction} must lie strictly between 0 and 1; set --data.val_fraction to e.g. 0.2")
    if templates is not None and (not templates or any(t.count("{}") != 1 for t in templates)):
        raise ZooError('each zero-shot template needs exactly one "{}" for the class name; fix --data.templates')
