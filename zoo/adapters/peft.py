"""LoRA adapters in PEFT's format (`adapter_config.json` + `adapter_model.safetensors`), both ways.

A PEFT adapter names each adapted layer by its Hugging Face module name
(`base_model.model.<module>.lora_A.weight`); the zoo names it by ours. The two are mapped through each
family's Hugging Face name table (`zoo.hf.<family>`: `rename` one way, `export_name` the other), so a
zoo model exported with `zoo.to_hf` and this adapter, loaded with
`peft.PeftModel.from_pretrained(base, DIR)`, computes what the zoo model computes, and an adapter
trained with `peft` on a Hugging Face model loads into the zoo model converted from it.

GPT-2 fuses q/k/v into one `c_attn` (a Conv1D, so `fan_in_fan_out`): a PEFT adapter on `c_attn` loads as
three zoo adapters sharing A, each with its third of B's rows; zoo adapters on q/k/v export as one
adapter on `c_attn` with the A's stacked and the B's placed block-diagonally (rank k·r, alpha k·alpha:
the same scale alpha/r, written to `rank_pattern`/`alpha_pattern`).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from zoo.adapters.lora import LoRALinear, add_lora, lora_layers
from zoo.errors import ZooError

PREFIX = "base_model.model."
GPT2_QKV = ("q_proj", "k_proj", "v_proj")
GPT2_MODULES = {"self_attn.o_proj": "attn.c_proj", "mlp.up_proj": "mlp.c_fc", "mlp.down_proj": "mlp.c_proj"}

# A mapped layer: (module name, part, parts): `part` of `parts` equal row blocks of the fused layer.
Mapped = tuple[str, int, int]


def _weight_name(fn: Callable[[str], Optional[str]]) -> Callable[[str], Optional[str]]:
    """A weight-name converter (".weight" names, as the zoo.hf tables take) used on module names."""
    def convert(module: str) -> Optional[str]:
        out = fn(module + ".weight")
        return out[: -len(".weight")] if out and out.endswith(".weight") else None
    return convert


def _gpt2_to_hf(zoo: str) -> Mapped:
    m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", zoo)
    if m is None:
        raise ZooError(f"the LoRA layer {zoo} has no GPT-2 counterpart")
    i, rest = m.groups()
    if rest.startswith("self_attn.") and rest.split(".")[-1] in GPT2_QKV:
        return f"transformer.h.{i}.attn.c_attn", GPT2_QKV.index(rest.split(".")[-1]), 3
    if rest not in GPT2_MODULES:
        raise ZooError(f"the LoRA layer {zoo} has no GPT-2 counterpart")
    return f"transformer.h.{i}.{GPT2_MODULES[rest]}", 0, 1


def _gpt2_from_hf(hf: str) -> list[Mapped]:
    m = re.fullmatch(r"(?:transformer\.)?h\.(\d+)\.(.+)", hf)
    inverse = {v: k for k, v in GPT2_MODULES.items()}
    if m is None or (m.group(2) != "attn.c_attn" and m.group(2) not in inverse):
        raise ZooError(f"the PEFT adapter's layer {hf} has no zoo GPT counterpart")
    i, rest = m.groups()
    if rest == "attn.c_attn":
        return [(f"decoder.layers.{i}.self_attn.{p}", k, 3) for k, p in enumerate(GPT2_QKV)]
    return [(f"decoder.layers.{i}.{inverse[rest]}", 0, 1)]


class NameMap:
    """Zoo ↔ Hugging Face module names of one model (its family's table; GPT-2 style or LLaMA style)."""

    def __init__(self, model: nn.Module):
        from zoo.families import family_of

        family = family_of(model)
        names = importlib.import_module(family.hf_import.partition(":")[0])  # the family's zoo.hf module
        self.fused = names.fused_qkv(model)  # GPT-2's c_attn
        to_hf, from_hf = names.weight_names(model)
        self.family = family.name
        self._to, self._from = _weight_name(to_hf), _weight_name(from_hf)

    def to_hf(self, zoo: str) -> Mapped:
        if self.fused:
            return _gpt2_to_hf(zoo)
        try:
            name = self._to(zoo)
        except (AttributeError, KeyError, ValueError):
            name = None
        if not name:
            raise ZooError(f"the LoRA layer {zoo} has no Hugging Face {self.family} counterpart")
        return name, 0, 1

    def from_hf(self, hf: str) -> list[Mapped]:
        if self.fused:
            return [(n, k, p) for n, k, p in _gpt2_from_hf(hf.removeprefix("transformer."))]
        name = self._from(hf)
        if not name:
            raise ZooError(f"the PEFT adapter's layer {hf} has no zoo {self.family} counterpart")
        return [(name, 0, 1)]


# ------------------------------------------------------------------------------------------- load
def _read_adapter(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config_file = directory / "adapter_config.json"
    if not config_file.is_file():
        raise ZooError(f"'{directory}' has no adapter_config.json; pass a directory written by PEFT's save_pretrained")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ZooError(f"'{directory}' holds a {config.get('peft_type')} adapter; zoo loads LoRA adapters")
    weights = directory / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        return config, load_file(str(weights))
    binary = directory / "adapter_model.bin"
    if binary.is_file():
        return config, torch.load(binary, map_location="cpu", weights_only=True)
    raise ZooError(f"'{directory}' has no adapter_model.safetensors (or adapter_model.bin)")


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches a module name ending in it (regex)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _adapted_modules(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{HF module name: {"A": ..., "B": ...}} from PEFT's keys (with or without an adapter name)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[\w-]+)?\.weight", key)
        if m is None:
            raise ZooError(f"PEFT adapter key {key} is not a LoRA A/B weight; zoo loads LoRA adapters without "
                           "modules_to_save, DoRA or biases")
        modules.setdefault(m.group(1), {})[m.group(2)] = value
    return modules


@torch.no_grad()
def load_peft(model: nn.Module, directory: str | Path) -> nn.Module:
    """Add the LoRA adapter saved by PEFT in `directory` (trained on the Hugging Face model this zoo
    model was converted from, e.g. with `zoo.from_hf`) to `model`; returns it, adapters trainable and
    the rest frozen, as `add_lora` leaves it."""
    config, state = _read_adapter(Path(directory))
    unsupported = [k for k in ("use_dora", "modules_to_save", "layers_to_transform") if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']}")
    if unsupported:
        raise ZooError(f"the PEFT adapter in '{directory}' uses {', '.join(unsupported)}; zoo loads plain LoRA adapters")
    if lora_layers(model):
        raise ZooError("this model already has LoRA adapters; merge them first (zoo.merge_lora) or load into a fresh model")
    names = NameMap(model)
    r0, alpha0 = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    plan = []  # (zoo module, part, parts, A, B, r, alpha)
    for hf, ab in _adapted_modules(state).items():
        r = int(_pattern_value(config.get("rank_pattern"), hf, r0))
        alpha = float(_pattern_value(config.get("alpha_pattern"), hf, alpha0))
        for zoo, part, parts in names.from_hf(hf):
            plan.append((zoo, part, parts, ab["A"], ab["B"], r, alpha))
    for (r, alpha) in sorted({(p[5], p[6]) for p in plan}):
        add_lora(model, r=r, alpha=alpha, dropout=float(config.get("lora_dropout", 0.0)),
                 targets=[p[0] for p in plan if (p[5], p[6]) == (r, alpha)])
    layers = lora_layers(model)
    for zoo, part, parts, a, b, r, alpha in plan:
        layer = layers[zoo]
        rows = b.shape[0] // parts
        layer.lora_A.weight.copy_(a)
        layer.lora_B.weight.copy_(b[part * rows:(part + 1) * rows])
        if config.get("use_rslora"):
            layer.scaling = alpha / r ** 0.5
    return model


# ------------------------------------------------------------------------------------------- save
def _task_type(model: nn.Module) -> Optional[str]:
    from zoo.families import can
    from zoo.models.base import Capability

    if can(model, Capability.CAUSAL_LM):
        return "CAUSAL_LM"
    return "SEQ_2_SEQ_LM" if can(model, Capability.SEQ2SEQ) else None


def peft_adapter(model: nn.Module, base_model_name_or_path: Optional[str] = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json dict, adapter_model.safetensors state) of `model`'s LoRA layers, named for
    the Hugging Face model `zoo.to_hf` writes of its base."""
    layers = lora_layers(model)
    if not layers:
        raise ZooError("this model has no LoRA adapters to export; train with a `lora:` option or use zoo.add_lora")
    shapes = {(m.r, m.alpha, m.scaling) for m in layers.values()}
    if len(shapes) > 1:
        raise ZooError(f"the LoRA layers have different ranks/alphas {sorted(s[:2] for s in shapes)}; PEFT export "
                       "needs one r and alpha")
    r, alpha, _ = shapes.pop()
    names = NameMap(model)
    grouped: dict[str, dict[int, LoRALinear]] = {}
    parts_of: dict[str, int] = {}
    for zoo, layer in layers.items():
        hf, part, parts = names.to_hf(zoo)
        grouped.setdefault(hf, {})[part] = layer
        parts_of[hf] = parts
    state, rank_pattern, alpha_pattern = {}, {}, {}
    for hf, pieces in grouped.items():
        a, b = _fuse(pieces, parts_of[hf])
        state[f"{PREFIX}{hf}.lora_A.weight"], state[f"{PREFIX}{hf}.lora_B.weight"] = a, b
        if len(pieces) > 1:
            rank_pattern[re.escape(hf)], alpha_pattern[re.escape(hf)] = len(pieces) * r, len(pieces) * alpha
    dropout = next((m.lora_dropout.p for m in layers.values() if isinstance(m.lora_dropout, nn.Dropout)), 0.0)
    config = {"peft_type": "LORA", "task_type": _task_type(model), "base_model_name_or_path": base_model_name_or_path,
              "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": sorted(grouped),
              "bias": "none", "fan_in_fan_out": names.fused, "inference_mode": True, "init_lora_weights": True,
              "modules_to_save": None, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
              "use_rslora": False, "use_dora": False}
    return config, state


def _fuse(pieces: dict[int, LoRALinear], parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One PEFT adapter for a layer fused from `parts` zoo layers: A's stacked, B's block-diagonal."""
    if parts == 1:
        layer = pieces[0]
        return layer.lora_A.weight.detach(), layer.lora_B.weight.detach()
    first = next(iter(pieces.values()))
    r, rows = first.r, first.out_features
    a = torch.cat([pieces[k].lora_A.weight.detach() for k in sorted(pieces)])
    b = torch.zeros(rows * parts, r * len(pieces), dtype=a.dtype)
    for j, k in enumerate(sorted(pieces)):
        b[k * rows:(k + 1) * rows, j * r:(j + 1) * r] = pieces[k].lora_B.weight.detach()
    return a, b


def save_peft(model: nn.Module, directory: str | Path, base_model_name_or_path: Optional[str] = None,
              dtype: torch.dtype = torch.float32) -> Path:
    """Write `model`'s adapters as PEFT's `adapter_config.json` + `adapter_model.safetensors`."""
    from safetensors.torch import save_file

    config, state = peft_adapter(model, base_model_name_or_path)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to("cpu", dtype).contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
