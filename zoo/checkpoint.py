"""Loading trained models back: from a zoo Lightning checkpoint (`.ckpt`) or a Hugging Face
directory / hub name. Checkpoints carry the family, the model config and the tokenizer (see
`Task.on_save_checkpoint`), so no YAML is needed to rebuild the model.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from zoo.errors import ZooError


def unsafe_checkpoint_message(path) -> str:
    return (f"checkpoint '{path}' pickles objects other than tensors and plain data; zoo loads checkpoints "
            "with weights_only=True so that a file cannot run code: re-save its state_dict, or use one "
            "written by `zoo fit`")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load a Lightning checkpoint safely (weights_only=True), with readable errors."""
    p = Path(path)
    if not p.exists():
        raise ZooError(f"checkpoint '{path}' does not exist; pass the path of a .ckpt file written by `zoo fit`")
    if is_sharded_checkpoint(p):
        return _read_sharded(p)
    if p.is_dir():
        raise ZooError(f"'{path}' is a directory, not a checkpoint file; pass a .ckpt file (or a Hugging Face directory to --model)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ZooError(unreadable_checkpoint_message(path, err)) from err


def unreadable_checkpoint_message(path: str | os.PathLike, err: BaseException) -> str:
    """Why torch.load failed, told from the file's first bytes: not a checkpoint at all (text, HTML,
    empty), a torch zip archive cut short (a copy or download interrupted), or one that pickles objects."""
    p = Path(path)
    head = p.read_bytes()[:4] if p.is_file() else b""
    fix = "pass a .ckpt file written by `zoo fit`"
    if not head:
        return f"checkpoint '{path}' is empty; {fix}"
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch saves zip archives (PK); legacy files are pickles (\x80)
        kind = "a text file" if _looks_like_text(p) else "not a PyTorch checkpoint"
        return f"checkpoint '{path}' is {kind}, not a PyTorch checkpoint; {fix}"
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err).lower():
        return unsafe_checkpoint_message(path)
    if head[:2] == b"PK" and not zipfile.is_zipfile(p):
        return (f"checkpoint '{path}' is truncated or corrupt (its archive does not end); copy it again, or use "
                "another checkpoint of the run (e.g. last.ckpt)")
    return f"checkpoint '{path}' could not be read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); {fix}"


def _looks_like_text(path: Path) -> bool:
    try:
        path.read_bytes()[:4096].decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def is_sharded_checkpoint(path: Path) -> bool:
    """A folder of per-rank shards (torch.distributed.checkpoint), as FSDP2 / tensor-parallel runs write
    with `save_distributed_checkpoint: true`: `.metadata`, `__<rank>_0.distcp` files, Lightning's `meta.pt`."""
    return path.is_dir() and (path / ".metadata").is_file() and (path / "meta.pt").is_file()


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` names what `zoo fit` writes (a `.ckpt` or other file, or a sharded checkpoint
    folder) rather than a Hugging Face directory, a `zoo quantize` folder or a hub name."""
    p = Path(path)
    return p.suffix == ".ckpt" or p.is_file() or is_sharded_checkpoint(p)


def _read_sharded(path: Path) -> dict[str, Any]:
    """The shards gathered into one state dict (on the CPU, no process group needed), with the
    non-tensor entries (family, config, tokenizer, loop state) from `meta.pt`."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    try:
        meta = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(path, Path(tmp) / "full.pt")
            full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ZooError(unsafe_checkpoint_message(path)) from err
    except Exception as err:
        raise ZooError(f"'{path}' is not a readable sharded checkpoint ({type(err).__name__}: {err}); "
                       "pass the checkpoint folder a zoo run wrote, all shards included") from err
    return {**meta, "state_dict": full["state_dict"]}


def checkpoint_family(ckpt: dict) -> Optional[str]:
    return (ckpt.get("zoo") or {}).get("family")


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizers.Tokenizer or None) from a zoo `.ckpt` file."""
    return model_from_read(read_checkpoint(path), path)


def model_from_read(ckpt: dict, path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer or None) from an already-read checkpoint dict (`read_checkpoint`)."""
    from zoo.families import FAMILIES

    meta = ckpt.get("zoo")
    if not meta or meta.get("family") not in FAMILIES or meta.get("config") is None:
        raise ZooError(f"'{path}' was not written by a zoo task (no model description inside); train with `zoo fit` first")
    from zoo.adapters.tasks import rebuild  # base + LoRA adapters when the run trained them

    model = rebuild(ckpt, path)
    tokenizer = None
    if meta.get("tokenizer"):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(meta["tokenizer"])
    return model.eval(), tokenizer


def looks_like_path(name: str) -> bool:
    """Whether a model argument that does not exist was meant as a local path (it has a directory
    separator, starts with "." or "~", or ends like a checkpoint) rather than a hub name ("org/name"
    has one "/" and no dot-start: a hub name)."""
    if name.startswith((".", "~", os.sep)) or name.endswith((".ckpt", ".pt", ".safetensors")):
        return True
    return name.count("/") > 1 or os.sep != "/" and os.sep in name


def load_model(path: str) -> tuple[nn.Module, Any]:
    """A `.ckpt` file, a Hugging Face directory, or a hub name → (model, tokenizer)."""
    p = Path(path)
    if p.is_dir() and (p / "zoo.json").is_file():  # a folder `zoo quantize` wrote (zoo.compress)
        from zoo.compress.quantize import is_quantized_dir, load_quantized

        if is_quantized_dir(p):
            return load_quantized(p)
    if p.is_dir() and not is_sharded_checkpoint(p):
        from zoo.hf import from_hf

        model = from_hf(path)
        return model, getattr(model, "tokenizer", None)
    if p.suffix == ".ckpt" or p.exists() or looks_like_path(path):
        return model_from_checkpoint(path)
    from zoo.hf import from_hf  # a hub name

    model = from_hf(path)
    return model, getattr(model, "tokenizer", None)
