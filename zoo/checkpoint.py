"""Loading trained models back: from a zoo Lightning checkpoint (`.ckpt`) or a Hugging Face
directory / hub name. Checkpoints carry the family, the model config and the tokenizer (see
`Task.on_save_checkpoint`), so no YAML is needed to rebuild the model.
"""

from __future__ import annotations

import os
import pickle
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
    except pickle.UnpicklingError as err:
        raise ZooError(unsafe_checkpoint_message(path)) from err
    except Exception as err:
        raise ZooError(f"'{path}' is not a readable PyTorch checkpoint ({type(err).__name__}); pass a .ckpt file written by `zoo fit`") from err


def is_sharded_checkpoint(path: Path) -> bool:
    """A folder of per-rank shards (torch.distributed.checkpoint), as FSDP2 / tensor-parallel runs write
    with `save_distributed_checkpoint: true`: `.metadata`, `__<rank>_0.distcp` files, Lightning's `meta.pt`."""
    return path.is_dir() and (path / ".metadata").is_file() and (path / "meta.pt").is_file()


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
    from zoo.models import FAMILIES

    ckpt = read_checkpoint(path)
    meta = ckpt.get("zoo")
    if not meta or meta.get("family") not in FAMILIES or meta.get("config") is None:
        raise ZooError(f"'{path}' was not written by a zoo task (no model description inside); train with `zoo fit` first")
    model_cls, config_cls = FAMILIES[meta["family"]]
    model = model_cls(config_cls(**meta["config"]))
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    tokenizer = None
    if meta.get("tokenizer"):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(meta["tokenizer"])
    return model.eval(), tokenizer


def load_model(path: str) -> tuple[nn.Module, Any]:
    """A `.ckpt` file, a Hugging Face directory, or a hub name → (model, tokenizer)."""
    p = Path(path)
    if p.is_dir() and not is_sharded_checkpoint(p):
        from zoo.hf import from_hf

        model = from_hf(path)
        return model, getattr(model, "tokenizer", None)
    if p.suffix == ".ckpt" or p.exists() or os.sep in path or path.startswith("."):
        return model_from_checkpoint(path)
    from zoo.hf import from_hf  # a hub name

    model = from_hf(path)
    return model, getattr(model, "tokenizer", None)
