"""What `zoo evaluate` loads for one `--model` argument: the model and tokenizer, the task that trained
it (with any head it added: a classifier), and the data module that task validated on.

A zoo `.ckpt` carries all of it: the family and model config (`checkpoint["zoo"]`), the task's
hyper-parameters and the data module's (`hyper_parameters` / `datamodule_hyper_parameters`, which
Lightning saves with their `_class_path`). A Hugging Face directory carries only the model and the
tokenizer: its family's pre-training task is used, and its data comes from `--data` (the `data:`
section of a fit config).

`load_for_evaluation` is the one place a model is loaded for evaluation; transforms applied to a
built model before it is scored (quantization, LoRA merging) belong in `prepare`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from zoo.errors import ZooError


@dataclass
class Loaded:
    """One model to evaluate. `task`: the LightningModule that trained it, rebuilt (no Trainer);
    `data`: the `data:` config (class_path, init_args) of its held-out split, or None."""

    name: str
    source: str
    model: nn.Module
    tokenizer: Any
    task: nn.Module
    data: Optional[dict]
    quantization: Optional[str] = None  # the zoo.compress.quantize scheme it is scored with; None: float


def _init_args(hparams: dict) -> tuple[Optional[str], dict]:
    return hparams.get("_class_path"), {k: v for k, v in hparams.items() if not k.startswith("_")}


def _instantiate(class_path: str, init_args: dict, **extra) -> Any:
    from zoo.families import resolve

    module, _, name = class_path.rpartition(".")
    cls = resolve(f"{module}:{name}")
    accepted = inspect.signature(cls.__init__).parameters
    keep = {k: v for k, v in init_args.items() if k in accepted or any(
        p.kind is p.VAR_KEYWORD for p in accepted.values())}
    return cls(**keep, **extra)


def build_task(model: nn.Module, hparams: Optional[dict], meta: dict) -> nn.Module:
    """The checkpoint's task around `model` (its pre-training task for an HF directory); a classifier's
    head is built for the checkpoint's number of labels, and nothing is loaded from `init_from`."""
    from zoo.families import family_of

    class_path, args = _init_args(hparams or {})
    if class_path is None:
        class_path = f"zoo.tasks.{family_of(model).task}"
    args.pop("init_from", None)
    if meta.get("num_labels") is not None:
        args["num_labels"] = meta["num_labels"]
    return _instantiate(class_path, args, model=model)


def read_data_config(path: str) -> dict:
    """The `data:` section (class_path, init_args) of a fit config YAML, or a YAML holding only it."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ZooError(f"--data {path}: no such file; pass a fit config such as configs/gpt/nano.yaml")
    config = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    data = config.get("data", config)
    if not isinstance(data, dict) or "class_path" not in data:
        raise ZooError(f"--data {path}: no `data:` section with a class_path; "
                       "pass a fit config such as configs/gpt/nano.yaml")
    return {"class_path": data["class_path"], "init_args": dict(data.get("init_args") or {}), "given": True}


def prepare(model: nn.Module, quantize: Optional[str] = None) -> nn.Module:
    """Transforms applied to every built model, on its device, before scoring: `quantize` (a
    `zoo.compress.quantize` scheme) quantizes its stack linears with torchao."""
    from zoo.compress.quantize import maybe_quantize

    return maybe_quantize(model, quantize)


def load_for_evaluation(source: str, data: Optional[str] = None, device: str = "cpu",
                        quantize: Optional[str] = None) -> Loaded:
    """`source` (a zoo `.ckpt`, a Hugging Face directory or hub name) → `Loaded`, on `device`, quantized
    with `quantize` when given (check it first with `zoo.compress.quantize.check_quantize_option`)."""
    from zoo.checkpoint import load_model, read_checkpoint
    from zoo.compress.quantize import saved_scheme

    model, tokenizer = load_model(source)
    ckpt = read_checkpoint(source) if Path(source).suffix == ".ckpt" or Path(source).is_file() else {}
    meta = ckpt.get("zoo") or {}
    task = build_task(model, ckpt.get("hyper_parameters"), meta)
    if ckpt and any(k.startswith("classifier.") for k in ckpt["state_dict"]):
        task.load_state_dict(ckpt["state_dict"], strict=False)  # the head; the model is already loaded
    data_config = read_data_config(data) if data else None
    if data_config is None and ckpt.get("datamodule_hyper_parameters"):
        class_path, args = _init_args(ckpt["datamodule_hyper_parameters"])
        data_config = {"class_path": class_path, "init_args": args}
    task.to(torch.device(device)).eval()
    task.model = prepare(task.model, quantize)  # torchao quantizes on the weights' device
    return Loaded(Path(source).stem if Path(source).suffix else Path(source).name, source, task.model, tokenizer,
                  task, data_config, quantize or saved_scheme(source))


def build_datamodule(loaded: Loaded):
    """The data module of `loaded.data`, prepared and set up for validation; with a `--data` config that
    names no tokenizer, the model's own (a checkpoint's, or an HF directory's tokenizer.json)."""
    if loaded.data is None:
        raise ZooError(f"'{loaded.source}' carries no data config (a Hugging Face directory); pass --data "
                       "with a fit config whose `data:` section names the held-out split")
    args = dict(loaded.data["init_args"])
    if loaded.data.get("given") and args.get("tokenizer") is None and loaded.tokenizer is not None:
        # a config given with --data would train a tokenizer of its own: read the model's instead
        source = Path(loaded.source)
        args["tokenizer"] = str(source / "tokenizer.json") if source.is_dir() else loaded.source
    dm = _instantiate(loaded.data["class_path"], args)
    dm.prepare_data()
    dm.setup("validate")
    return dm
