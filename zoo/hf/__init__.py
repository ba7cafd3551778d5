"""Hugging Face interop: `from_hf(path)` turns a Hugging Face checkpoint into the zoo model of the
same family, with its weights and tokenizer.

`path` is a local directory (config.json plus model.safetensors, a sharded safetensors index, or
pytorch_model.bin) or a hub name, downloaded through `huggingface_hub` when online. The family is
found by config.json's `model_type` in the registry (`zoo.families`), whose spec names the
converter: `zoo.hf.<family>.convert(hf_config: dict, state_dict) -> model`, built on that family's
small name table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from zoo.errors import ZooError

def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint directory, from safetensors (single or sharded) or a .bin file."""
    from safetensors.torch import load_file

    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    binary = directory / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise ZooError(f"no weights in '{directory}': expected model.safetensors, a safetensors index, or pytorch_model.bin")


def load_tokenizer(directory: Path):
    """The directory's `tokenizer.json` as a `tokenizers.Tokenizer`, or None when there is none."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ZooError(f"'{name}' is not a local directory and huggingface_hub is not installed; "
                       "pass a local checkpoint directory or `pip install huggingface_hub`") from None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as err:
        raise ZooError(f"could not download '{name}' from the Hugging Face hub ({type(err).__name__}); "
                       "when offline, pass a local checkpoint directory instead") from None


def from_hf(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a Hugging Face checkpoint as a zoo model, in eval mode; its tokenizer (if any) is
    attached as `model.tokenizer`."""
    from zoo.checkpoint import looks_like_path
    from zoo.families import by_hf_model_type

    directory = Path(path)
    if not directory.exists():
        if looks_like_path(str(path)):
            raise ZooError(f"'{path}' does not exist; pass a Hugging Face checkpoint directory")
        directory = _download(str(path))
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ZooError(f"'{directory}' has no config.json; it is not a Hugging Face checkpoint directory")
    hf_config = json.loads(config_file.read_text())
    convert = by_hf_model_type(hf_config.get("model_type")).converter("import")
    model = convert(hf_config, read_state_dict(directory))
    model.tokenizer = load_tokenizer(directory)
    return model.to(dtype).eval()


def load_mapped(model: nn.Module, mapped: dict[str, torch.Tensor]) -> nn.Module:
    """Load `mapped` (zoo name → tensor) strictly, naming any missing or unexpected weight."""
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    # tied heads are shared parameters: they are filled through the embedding
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(model.config, "tie_embeddings", False))]
    if missing or unexpected:
        raise ZooError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


@dataclass
class ClassifierHead:
    """A fine-tuned classifier's linear head (`SequenceClassification.classifier[1]`) and its label names,
    exported as `...ForSequenceClassification`."""

    weight: torch.Tensor  # (num_labels, feature_dim)
    bias: Optional[torch.Tensor]  # (num_labels,)
    labels: list[str]

    def label_config(self) -> dict:
        names = self.labels or [f"LABEL_{i}" for i in range(self.weight.shape[0])]
        return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def refuse(family: str, setting: str, why: str) -> ZooError:
    """The one-line error for a zoo configuration Hugging Face cannot express."""
    return ZooError(f"cannot export this {family} model to Hugging Face format: {setting} ({why})")


def invert_activation(table: dict[str, str], ours: str, family: str) -> str:
    """The Hugging Face name of our activation `ours`, read backwards off an import `table`."""
    for theirs in table:
        if table[theirs] == ours:
            return theirs
    raise refuse(family, f"activation={ours!r}", f"Hugging Face {family} knows {', '.join(sorted(table))}")
