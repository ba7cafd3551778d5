"""Post-training quantization on torchao (`torchao.quantization.quantize_`), for every family.

The linear layers inside the transformer stacks (attention q/k/v/o, MLP up/gate/down: nearly all the
non-embedding weights) are quantized; embeddings, norms and output heads stay in float. Output heads
stay float because they are tied to the token embedding in most families and because the fused
head + loss (`zoo.blocks.loss`) multiplies by the head's weight directly.

| scheme | torchao config | device |
| --- | --- | --- |
| int8-weight | `Int8WeightOnlyConfig` (per-channel symmetric int8 weights, float activations) | CPU, CUDA |
| int8-dynamic | `Int8DynamicActivationInt8WeightConfig` (per-token int8 activations × int8 weights) | CPU, CUDA |
| int4-weight | `Int4WeightOnlyConfig` (group-wise int4, bfloat16 activations) | CUDA |
| float8 | `Float8DynamicActivationFloat8WeightConfig` (per-row float8 e4m3) | CUDA (SM ≥ 8.9) |

Saved quantized models are a folder: `model.safetensors` holds plain tensors only, a quantized
weight as its components (`<name>.__qdata`, `<name>.__scale`, ...: torchao's `__tensor_flatten__`),
and `zoo.json` the family, config and scheme, and an instruction-tuned model's chat template (under
"chat_template", as `ChatTemplate.to_meta` writes it, so that `zoo serve` of the folder prompts it as it
was trained). Loading rebuilds the model, quantizes it with the same scheme (so torchao makes the tensor
subclasses with their non-tensor metadata) and puts the saved components in: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from torch import nn

from zoo.errors import ZooError

Scheme = Literal["int8-weight", "int8-dynamic", "int4-weight", "float8"]
CUDA_ONLY = {"int4-weight", "float8"}
SCHEMES: tuple[str, ...] = ("int8-weight", "int8-dynamic", "int4-weight", "float8")
FORMAT = "zoo-quantized"
INSTALL = "pip install zoo[compress]"


def torchao_quantization():
    """The `torchao.quantization` module, or a one-line ZooError naming the extra to install."""
    import logging

    # torchao logs the CUDA-only kernels it cannot load, and torch a deprecation torchao triggers
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import torchao.quantization as q
    except ImportError as err:
        raise ZooError(f"quantization needs torchao ({err}); {INSTALL}") from None
    return q


def _config(scheme: str):
    q = torchao_quantization()
    factories: dict[str, Callable[..., Any]] = {
        "int8-weight": q.Int8WeightOnlyConfig,
        "int8-dynamic": q.Int8DynamicActivationInt8WeightConfig,
        "int4-weight": lambda **kw: q.Int4WeightOnlyConfig(group_size=128, **kw),
        "float8": q.Float8DynamicActivationFloat8WeightConfig,
    }
    # set_inductor_config=True would change torch._inductor's global settings for the whole process
    return factories[scheme](set_inductor_config=False)


def check_scheme(scheme: str, device: str | torch.device = "cpu") -> None:
    """A one-line ZooError for an unknown scheme, or a CUDA-only scheme without CUDA."""
    if scheme not in SCHEMES:
        raise ZooError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme in CUDA_ONLY and (torch.device(device).type != "cuda" or not torch.cuda.is_available()):
        raise ZooError(f"quantization scheme {scheme!r} needs a CUDA GPU (torchao has no CPU kernel for it); "
                       "on the CPU use int8-weight or int8-dynamic")


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers inside the model's transformer stacks, by qualified name."""
    from zoo.blocks import TransformerStack

    found = {}
    for stack_name, stack in model.named_modules():
        if isinstance(stack, TransformerStack):
            for name, mod in stack.named_modules():
                if isinstance(mod, nn.Linear):
                    found[f"{stack_name}.{name}" if stack_name else name] = mod
    return found


def quantize(model: nn.Module, scheme: Scheme = "int8-weight") -> nn.Module:
    """Quantize `model`'s stack linears in place with torchao (`scheme`: see the module docstring);
    returns it, in eval mode. The model should already be on its device."""
    device = next(model.parameters()).device
    check_scheme(scheme, device)
    q = torchao_quantization()
    if scheme == "int4-weight":
        model.to(torch.bfloat16)  # torchao's int4 kernels take bfloat16 activations
    targets = set(quantizable_linears(model))
    q.quantize_(model, _config(scheme), filter_fn=lambda mod, fqn: fqn in targets)
    return model.eval()


def is_quantized(tensor: torch.Tensor) -> bool:
    return type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__")


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as plain tensors: a quantized weight becomes its components; tied tensors once."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        if is_quantized(t):
            inner, _ = t.__tensor_flatten__()
            for part in inner:
                out[f"{name}.__{part}"] = getattr(t, part).detach().contiguous()
        elif t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            out[name] = t.detach().contiguous()
    return out


def save_quantized(model: nn.Module, out: str | os.PathLike, scheme: str, tokenizer=None,
                   chat_template: Optional[dict[str, Any] | str] = None) -> Path:
    """Write a quantized zoo model to folder `out` (model.safetensors + zoo.json [+ tokenizer.json]);
    `chat_template` (the source's, as `zoo.data.chat_template.ChatTemplate.to_meta` writes it) goes into
    zoo.json, where `zoo.serve.chat` reads it back."""
    from safetensors.torch import save_file

    from zoo.families import family_of

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(plain_state(model), str(out / "model.safetensors"))
    meta = {"format": FORMAT, "family": family_of(model).name, "config": asdict(model.config), "scheme": scheme}
    if chat_template:
        meta["chat_template"] = chat_template
    (out / "zoo.json").write_text(json.dumps(meta, indent=1))
    if tokenizer is not None:
        tokenizer.save(str(out / "tokenizer.json"))
    return out


def saved_meta(path: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The zoo.json of a folder `save_quantized` wrote (family, config, scheme, chat template);
    None for anything else (a `.ckpt`, an HF directory, a hub name)."""
    p = Path(path) / "zoo.json"
    if not p.is_file():
        return None
    meta = json.loads(p.read_text())
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def is_quantized_dir(path: str | os.PathLike) -> bool:
    return saved_meta(path) is not None


def load_quantized(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Any]:
    """(quantized model in eval mode, tokenizer or None) from a folder `save_quantized` wrote."""
    from safetensors.torch import load_file

    from zoo.families import get

    path = Path(path)
    meta = json.loads((path / "zoo.json").read_text())
    model = quantize(get(meta["family"]).build(meta["config"]).to(device), meta["scheme"])
    saved = load_file(str(path / "model.safetensors"), device=str(device))
    plain = {k: v for k, v in saved.items() if ".__" not in k}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    quantized = {name: p for name, p in model.named_parameters(remove_duplicate=False) if is_quantized(p)}
    tied = {n for n in missing if n not in quantized}
    if unexpected or any(not _is_tied(model, n) for n in tied):
        raise ZooError(f"'{path}' does not match its zoo.json (unexpected {unexpected[:3]}, missing {sorted(tied)[:3]})")
    for name, template in quantized.items():
        _put_components(model, name, template, saved)
    tokenizer = None
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    return model.eval(), tokenizer


def _is_tied(model: nn.Module, name: str) -> bool:
    """Whether parameter `name` shares its storage with another (a tied head saved once)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return name in params and sum(p is params[name] for p in params.values()) > 1


def _put_components(model: nn.Module, name: str, template: torch.Tensor, saved: dict[str, torch.Tensor]) -> None:
    inner, ctx = template.__tensor_flatten__()
    try:
        parts = {part: saved[f"{name}.__{part}"] for part in inner}
    except KeyError as err:
        raise ZooError(f"quantized weight {name} lacks its component {err}; re-save the model with zoo quantize") from None
    tensor = type(template).__tensor_unflatten__(parts, ctx, template.shape, template.stride())
    module_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(module_name), attr, nn.Parameter(tensor, requires_grad=False))


def maybe_quantize(model: nn.Module, scheme: Optional[str]) -> nn.Module:
    """`quantize(model, scheme)` unless `scheme` is None (the `--quantize` option of zoo generate, serve
    and evaluate)."""
    return model if scheme is None else quantize(model, scheme)  # type: ignore[arg-type]


def saved_scheme(path: str | os.PathLike) -> Optional[str]:
    """The scheme of a folder `save_quantized` wrote; None for anything else (a `.ckpt`, an HF directory)."""
    meta = saved_meta(path)
    return meta["scheme"] if meta is not None else None


def check_quantize_option(scheme: Optional[str], device: str | torch.device = "cpu",
                          sources: tuple[str, ...] | list[str] = ()) -> None:
    """`--quantize SCHEME`, checked before anything loads or starts: a known scheme, the device it needs,
    torchao installed, and no source that `zoo quantize` already quantized; a one-line ZooError otherwise."""
    if scheme is None:
        return
    check_scheme(scheme, device)
    torchao_quantization()
    for source in sources:
        saved = saved_scheme(source)
        if saved is not None:
            raise ZooError(f"'{source}' is already quantized ({saved}, written by zoo quantize); "
                           f"drop --quantize {scheme}, or quantize the float checkpoint")
