"""LoRA in training runs: the `lora:` option of every task, and checkpoints that hold adapters.

`apply_to_task` runs in `Task.configure_model`, before parallelism: the model starts from `lora.base` when
that is set (and is not the task's `init_from`, already loaded), gets its adapters, and every
model parameter is frozen except the adapters and the modules named in `trainable` (the task's own
new head, outside the model, keeps training). Adapter initialisation draws from a generator seeded
with the run's seed (`torch.initial_seed()`), so every rank of a sharded run builds the same A without
a broadcast.

A checkpoint of a LoRA run records `checkpoint["zoo"]["lora"]` (the config, and the base checkpoint);
with `save_adapters_only` its state dict keeps only the trainable tensors (adapters, heads).
`model_from_checkpoint` rebuilds base + adapters from either.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from zoo.adapters.lora import LoRAConfig, add_lora, has_lora, matches
from zoo.errors import ZooError

log = logging.getLogger("zoo")


def apply_to_task(task: nn.Module, config: LoRAConfig) -> None:
    """Add adapters to `task.model` and set what trains; a no-op when they are there already."""
    if has_lora(task.model):
        return
    init_from = getattr(task, "init_from", None)
    if config.save_adapters_only and not (config.base or init_from):
        raise ZooError("lora.save_adapters_only needs the base model's checkpoint: set "
                       "--model.init_args.init_from (or lora.base) to the checkpoint to adapt")
    if config.quantize is not None and not config.save_adapters_only:
        raise ZooError(f"lora.quantize {config.quantize} (QLoRA) needs lora.save_adapters_only: true: the quantized "
                       "base is not saved, checkpoints hold the adapters and name the float base")
    if config.base and config.base != init_from:
        load_base(task.model, config.base)
    if config.quantize is not None:  # the documented order: quantize → LoRA → parallelism
        from zoo.compress.qlora import quantize_base

        quantize_base(task.model, config.quantize)
    generator = torch.Generator().manual_seed(torch.initial_seed())
    add_lora(task.model, r=config.r, alpha=config.alpha, dropout=config.dropout, targets=config.targets,
             generator=generator)
    if config.trainable:
        matched = [n for n, m in task.named_modules() if n and matches(n, config.trainable)]
        if not matched:
            raise ZooError(f"lora.trainable {config.trainable} matches no module of the task")
        for name in matched:
            for p in task.get_submodule(name).parameters():
                p.requires_grad_(True)
    total = sum(p.numel() for p in task.parameters())
    trained = sum(p.numel() for p in task.parameters() if p.requires_grad)
    log.info("lora: training %d of %d parameters (%.2f%%)", trained, total, 100 * trained / max(1, total))


def load_base(model: nn.Module, path: str) -> None:
    """Start from the weights of the zoo checkpoint `path` (tasks without `init_from`: `lora.base`)."""
    from zoo.checkpoint import model_from_checkpoint

    base, _ = model_from_checkpoint(path)
    if not same_weights_layout(base, model):
        raise ZooError(f"lora.base '{path}' holds another model than the config builds; use the base's architecture")
    model.load_state_dict(base.state_dict())
    log.info("lora: base weights from '%s'", path)


def same_weights_layout(a: nn.Module, b: nn.Module) -> bool:
    """Whether `a`'s weights load into `b`: the same class and the same tensor names and shapes. Not config
    equality: a fine-tuning config may change what leaves the weights alone (dropout, say)."""
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    return type(a) is type(b) and shapes(a) == shapes(b)


def checkpoint_meta(config: LoRAConfig, init_from: Optional[str]) -> dict:
    meta = asdict(config)
    meta["base"] = config.base or init_from
    if config.save_adapters_only and not meta["base"]:
        raise ZooError("lora.save_adapters_only needs the base model's checkpoint: set lora.base (or init_from)")
    return meta


def trainable_state(task: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """The entries of a task's checkpoint `state` that belong to trainable parameters (and buffers of
    no parameter, which are small): what an adapter-only checkpoint keeps."""
    frozen = {n for n, p in task.named_parameters(remove_duplicate=False) if not p.requires_grad}  # tied too
    return {k: v for k, v in state.items() if k not in frozen}


def rebuild(ckpt: dict, path: str | Path) -> nn.Module:
    """The model of a zoo checkpoint `ckpt` (read from `path`), with its LoRA adapters when the run had
    them; base weights from the named base checkpoint when the file holds the adapters alone."""
    from zoo.families import FAMILIES

    meta = ckpt.get("zoo")
    if not meta or meta.get("family") not in FAMILIES or meta.get("config") is None:
        raise ZooError(f"'{path}' was not written by a zoo task (no model description inside); train with `zoo fit` first")
    model = FAMILIES[meta["family"]].build(meta["config"])
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    lora = meta.get("lora")
    if not lora:
        model.load_state_dict(state)
        return model
    adapters_only = lora.get("save_adapters_only")
    if adapters_only:
        from zoo.checkpoint import model_from_checkpoint

        base_path = lora.get("base")
        if not base_path or not Path(base_path).exists():
            raise ZooError(f"'{path}' holds LoRA adapters only; its base model '{base_path}' is not there: "
                           "put the base checkpoint back at that path")
        base, _ = model_from_checkpoint(base_path)
        if not same_weights_layout(base, model):
            raise ZooError(f"the base checkpoint '{base_path}' is not the model the adapters in '{path}' were trained on")
        model.load_state_dict(base.state_dict())
    add_lora(model, r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"], targets=lora["targets"])
    missing, unexpected = model.load_state_dict(state, strict=not adapters_only)
    missing = [k for k in missing if ".lora_" in k]  # adapter-only: the base weights came from the base checkpoint
    if missing or unexpected:
        raise ZooError(f"'{path}' does not match its LoRA model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model
