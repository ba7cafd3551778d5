"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), applied from outside a
built model, as parallelism is.

`add_lora(model, r, alpha, dropout, targets)` replaces each matching layer `m` by `LoRALinear(m)`:

    y = m(x) + (alpha / r) · B(A(dropout(x)))      A: (r, in), B: (out, r), B = 0 at the start

so the model computes the same function until B moves, and freezes every other parameter. Parameter
names follow PEFT's (without its adapter name): `q_proj.base_layer.weight`, `q_proj.lora_A.weight`,
`q_proj.lora_B.weight`. `merge_lora(model)` folds `(alpha / r)·B·A` into the base weights and puts the
plain layers back.

What `add_lora` wraps: any module with a `weight` and integer `in_features` / `out_features` whose
forward maps (..., in_features) to (..., out_features): `nn.Linear`, and quantized linears (torchao's
and bitsandbytes' keep these attributes), so QLoRA is `add_lora` on a quantized model. `merge_lora`
needs a float `nn.Linear` base (a quantized base cannot take the update in place).

Order with the other transforms (DESIGN.md): quantize → LoRA → tensor parallel → activation
checkpointing → compile → FSDP2. Under tensor parallel (`expand_tensor_parallel_plan`) an adapter is
sharded to match its base layer: for a column-parallel layer A is replicated and B column-sharded (its
output is the layer's local slice); for a row-parallel layer A is row-sharded (its output is
all-reduced like the layer's) and B replicated.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional, Sequence, Union

import torch
from torch import nn

from zoo.errors import ZooError

ALL_LINEAR = "all-linear"
Targets = Union[Literal["all-linear"], list[str]]


@dataclass
class LoRAConfig:
    """The `lora:` option of every task (applied in `Task.configure_model`, before parallelism).

    Args:
        r: rank of the update B·A.
        alpha: scale numerator: the update is multiplied by alpha / r.
        dropout: dropout on the adapter's input (not the base layer's).
        targets: module-name patterns of the layers to adapt ("q_proj" matches every module whose
            name ends in ".q_proj"; globs like "*.mlp.*_proj" match whole names), or "all-linear":
            every linear layer inside the transformer blocks (attention and MLP projections).
        trainable: more module-name patterns (same matching, on the task's modules) whose parameters
            stay trainable, e.g. ["pooler"] or ["norm"]. A task's own new head (the classifier) is
            outside the model and always trains.
        save_adapters_only: checkpoints hold only the trainable parameters (adapters and heads), and
            name the base model (`base`) to rebuild from.
        base: the base model's zoo checkpoint, recorded in adapter-only checkpoints; default: the
            task's `init_from`.
        quantize: QLoRA: quantize the frozen base before adding the adapters, "int8-weight" (torchao,
            CPU or CUDA) or "nf4" (bitsandbytes, CUDA). Needs `save_adapters_only` (the quantized base
            is not saved): checkpoints hold the float adapters and name the float base, and loading one
            gives the float base with the adapters (merge and export as usual).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: Targets = field(default_factory=lambda: ["q_proj", "v_proj"])
    trainable: list[str] = field(default_factory=list)
    save_adapters_only: bool = False
    base: Optional[str] = None
    quantize: Optional[str] = None


class LoRALinear(nn.Module):
    """A layer plus its low-rank update; `base_layer` is the original module, untouched."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if r < 1:
            raise ZooError(f"LoRA rank r must be at least 1, got {r}")
        weight = base_layer.weight
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        in_features, out_features = int(base_layer.in_features), int(base_layer.out_features)
        self.base_layer = base_layer
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(in_features, r, bias=False, device=weight.device, dtype=dtype)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=weight.device, dtype=dtype)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """A ~ U(-1/√in, 1/√in) (PEFT's kaiming_uniform(a=√5)), B = 0."""
        bound = 1 / math.sqrt(self.lora_A.in_features)
        a = torch.rand(self.lora_A.weight.shape, generator=generator) * 2 * bound - bound
        with torch.no_grad():
            self.lora_A.weight.copy_(a)
            self.lora_B.weight.zero_()

    @property
    def in_features(self) -> int:
        return self.lora_A.in_features

    @property
    def out_features(self) -> int:
        return self.lora_B.out_features

    def delta_weight(self) -> torch.Tensor:
        """(out, in): the update the adapter adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_B(self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype))))
        return self.base_layer(x) + (update * self.scaling).to(x.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


# --------------------------------------------------------------------------------- matching
def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether module `name` matches a pattern: its last components ("q_proj", "self_attn.q_proj"),
    or a glob on the whole name ("*.mlp.*")."""
    for p in patterns:
        if name == p or name.endswith("." + p) or (any(c in p for c in "*?[") and fnmatch.fnmatchcase(name, p)):
            return True
    return False


def is_linear_like(module: nn.Module) -> bool:
    """A module LoRA can wrap: a `weight` and integer in/out feature counts (nn.Linear, quantized linears)."""
    return (not isinstance(module, LoRALinear) and getattr(module, "weight", None) is not None
            and isinstance(getattr(module, "in_features", None), int)
            and isinstance(getattr(module, "out_features", None), int))


def _candidates(model: nn.Module, targets: Union[str, Sequence[str]]) -> list[str]:
    from zoo.parallel import transformer_blocks

    inside_lora = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    names = [n for n, m in model.named_modules() if is_linear_like(m)
             and not any(n.startswith(p + ".") for p in inside_lora)]
    if not isinstance(targets, str) and list(targets) == [ALL_LINEAR]:  # `--targets all-linear` arrives as a list
        targets = ALL_LINEAR
    if targets == ALL_LINEAR:
        block_modules = {id(m) for b in transformer_blocks(model) for m in b.modules()}
        return [n for n in names if id(model.get_submodule(n)) in block_modules]
    if isinstance(targets, str):
        raise ZooError(f"LoRA targets {targets!r}: give a list of module-name patterns or 'all-linear'")
    return [n for n in names if matches(n, targets)]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# --------------------------------------------------------------------------------- public API
def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets: Union[str, Sequence[str]] = ("q_proj", "v_proj"), trainable: Sequence[str] = (),
             generator: Optional[torch.Generator] = None) -> nn.Module:
    """Wrap the layers of `model` matching `targets` in `LoRALinear` (B = 0: the function is unchanged),
    freeze every other parameter except those of modules matching `trainable`; returns `model` (in place).

    Apply it before parallelism (tensor parallel, FSDP2): the layers must hold whole weights."""
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        raise ZooError("add_lora needs a model with whole weights; apply LoRA before tensor parallel / FSDP2 "
                       "(the order is quantize → LoRA → tensor parallel → checkpointing → compile → FSDP2)")
    names = _candidates(model, targets)
    if not names:
        linear = [n.rsplit(".", 1)[-1] for n, m in model.named_modules() if is_linear_like(m)]
        raise ZooError(f"LoRA targets {list(targets) if not isinstance(targets, str) else targets} match no linear "
                       f"layer of this model; its linear layers are named {', '.join(sorted(set(linear))[:12])}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout, generator))
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            module.lora_A.weight.requires_grad_(True)
            module.lora_B.weight.requires_grad_(True)
        elif trainable and matches(name, trainable):
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{module name: LoRALinear} of `model`, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W ← W + (alpha/r)·B·A) and put the plain layer back;
    returns `model` (in place). Freezing is left as it was."""
    for name, layer in lora_layers(model).items():
        base = layer.base_layer
        if type(base) is not nn.Linear or not base.weight.is_floating_point():
            raise ZooError(f"cannot merge the LoRA adapter of {name}: its base is a {type(base).__name__}, "
                           "not a float nn.Linear (a quantized base cannot take the update); dequantize first")
        base.weight.add_(layer.delta_weight().to(base.weight.dtype))
        _set_submodule(model, name, base)
    return model


def strip_lora(model: nn.Module) -> nn.Module:
    """Put every base layer back without its adapter (the base model the adapters were trained on)."""
    for name, layer in lora_layers(model).items():
        _set_submodule(model, name, layer.base_layer)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' weights ({"...q_proj.lora_A.weight": ...}), as in the model's state dict."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


# --------------------------------------------------------------------------------- tensor parallel
def expand_tensor_parallel_plan(block: nn.Module, plan: dict) -> dict:
    """A block's tensor-parallel plan with each LoRA-wrapped projection's entry replaced by entries for
    its base layer and adapter: column-parallel base → B column-parallel (A replicated, its input
    gradient all-reduced by B's input hook); row-parallel base → A row-parallel (its output
    all-reduced), B replicated."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    out = {}
    for name, style in plan.items():
        module = block.get_submodule(name)
        if not isinstance(module, LoRALinear):
            out[name] = style
            continue
        out[f"{name}.base_layer"] = style
        if isinstance(style, ColwiseParallel):
            out[f"{name}.lora_B"] = ColwiseParallel()
        elif isinstance(style, RowwiseParallel):
            out[f"{name}.lora_A"] = RowwiseParallel()
        else:
            raise ZooError(f"LoRA under tensor parallel supports column- and row-parallel layers, not {style!r}")
    return out
