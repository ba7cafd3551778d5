"""Structured pruning that shrinks the model (MLP neurons, attention heads), and unstructured magnitude
pruning for comparison.

Structured: every MLP's hidden neurons (and, with `heads=True`, attention heads where the family's
config can say so) are scored and the least important removed physically: the result is a smaller
dense model of the same family, with a config that says its widths, that trains, saves, loads,
exports and serves like any other.

Uniform per stack, by choice: each stack keeps the same number of neurons (and heads) in every layer,
chosen per layer by importance. The typed configs hold one width per stack, and Hugging Face configs
(`intermediate_size`, `n_inner`, `encoder_ffn_dim`, ...) hold one width per model, so uniform pruning
is what keeps `zoo export` and every loader working; per-layer widths would need per-layer config
overrides that no exported format could carry.

Importance is the weight-magnitude proxy of the pruning literature (data-free): a neuron's score is
the product of the L2 norms of its input row(s) (up, and gate when gated) and its output column
(down); a head's is the L2 norm of its q/k/v rows times that of its o_proj columns. Gradient-based
head importance (Michel et al., 2019, "Are Sixteen Heads Really Better than One?") needs a family's
objective on batches; `taylor_scores` gives it for any loss callable.

Heads: a head width independent of d_model is needed to drop heads and keep the rest unchanged.
GPT has it (`head_dim`; RoPE / learned / no positions, no grouped-query, no ALiBi, whose slopes are
per head index); BERT, BART and CLIP tie the head width to d_model / n_head, and T5 shares one
relative-position table across layers (per head index), so those keep their heads. A head-pruned
learned-position GPT no longer fits Hugging Face GPT-2 (which has no head_dim): `zoo export` says
so; a RoPE GPT exports as LLaMA.

Unstructured: `magnitude_prune` zeroes the smallest weights of the stack linears (torch.nn.utils.prune,
made permanent). The tensors keep their shapes: no smaller file, no speed-up without sparse kernels.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from zoo.blocks import TransformerStack
from zoo.blocks.attention import Attention
from zoo.blocks.mlp import MLP
from zoo.errors import ZooError
from zoo.models import CLIP, GPT, Bart, Bert, T5
from zoo.models.base import ZooModel


def _width_updates(model: ZooModel, d_ff: dict[str, int], n_head: Optional[int]):
    """The family config with the stacks' new MLP widths (by stack name) and head count."""
    c = model.config
    if isinstance(model, GPT):
        heads = {} if n_head is None else {"n_head": n_head, "head_dim": c.head_dim or c.d_model // c.n_head}
        return replace(c, d_ff=d_ff["decoder"], **heads)
    if isinstance(model, (Bert, T5)):
        if len(set(d_ff.values())) != 1:
            raise ZooError(f"{model.family} has one d_ff for all stacks; got {d_ff}")
        return replace(c, d_ff=next(iter(d_ff.values())))
    if isinstance(model, Bart):
        return replace(c, d_ff=d_ff["encoder"], d_decoder_ff=d_ff["decoder"])
    if isinstance(model, CLIP):
        return replace(c, vision=replace(c.vision, d_ff=d_ff["vision_model.encoder"]),
                       text=replace(c.text, d_ff=d_ff["text_model.transformer"]))
    raise ZooError(f"{type(model).__name__} is not a zoo model that prune knows")


def stacks(model: nn.Module) -> dict[str, TransformerStack]:
    return {name: m for name, m in model.named_modules() if isinstance(m, TransformerStack)}


def head_prunable(model: ZooModel) -> bool:
    """Whether heads can be removed with the remaining ones unchanged (see the module docstring)."""
    c = model.config
    return isinstance(model, GPT) and c.position != "alibi" and (c.n_kv_head or c.n_head) == c.n_head


# ------------------------------------------------------------------------------------------ scores
def neuron_scores(mlp: MLP) -> torch.Tensor:
    """(d_ff,) weight-magnitude importance of each hidden neuron."""
    score = mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
    if mlp.gate_proj is not None:
        score = score * mlp.gate_proj.weight.norm(dim=1)
    return score


def head_scores(attn: Attention) -> torch.Tensor:
    """(n_head,) weight-magnitude importance of each head."""
    d, n = attn.head_dim, attn.n_head
    rows = sum(p.weight.view(n, d, -1).pow(2).sum((1, 2)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    cols = attn.o_proj.weight.view(-1, n, d).pow(2).sum((0, 2))
    return rows.sqrt() * cols.sqrt()


def taylor_scores(model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor],
                  batches: Iterable) -> dict[str, torch.Tensor]:
    """Michel et al. (2019)-style first-order importance |Σ w·∂L/∂w| per MLP neuron (keyed by the MLP's
    qualified name) over `batches`; `loss_fn(model, batch)` returns the family's objective."""
    mlps = {n: m for n, m in model.named_modules() if isinstance(m, MLP)}
    model.zero_grad(set_to_none=True)
    for batch in batches:
        loss_fn(model, batch).backward()
    out = {}
    for name, m in mlps.items():
        w, g = m.down_proj.weight, m.down_proj.weight.grad
        out[name] = (w * g).sum(0).abs() if g is not None else neuron_scores(m)
    model.zero_grad(set_to_none=True)
    return out


# ------------------------------------------------------------------------------------------ surgery
def _keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in their original order (so nothing pruned = the same model)."""
    return scores.topk(k).indices.sort().values


def _rows(linear: nn.Linear, idx: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    out = {"weight": linear.weight.index_select(dim, idx)}
    if linear.bias is not None:
        out["bias"] = linear.bias if dim == 1 else linear.bias.index_select(0, idx)
    return out


def _mlp_state(prefix: str, mlp: MLP, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {}
    for name in ("gate_proj", "up_proj"):
        if getattr(mlp, name) is not None:
            state.update({f"{prefix}.{name}.{k}": v for k, v in _rows(getattr(mlp, name), keep, 0).items()})
    state.update({f"{prefix}.down_proj.{k}": v for k, v in _rows(mlp.down_proj, keep, 1).items()})
    return state


def _attention_state(prefix: str, attn: Attention, heads: torch.Tensor) -> dict[str, torch.Tensor]:
    d = attn.head_dim
    idx = (heads[:, None] * d + torch.arange(d)).flatten()
    state = {}
    for name in ("q_proj", "k_proj", "v_proj"):
        state.update({f"{prefix}.{name}.{k}": v for k, v in _rows(getattr(attn, name), idx, 0).items()})
    state.update({f"{prefix}.o_proj.{k}": v for k, v in _rows(attn.o_proj, idx, 1).items()})
    return state


def keep_ratio(model: ZooModel, target: float, heads: bool) -> float:
    """The fraction of each prunable width to keep so that the non-embedding parameters are `target`
    of today's (prunable: MLP weights, and attention projections when heads are pruned)."""
    if not 0 < target <= 1:
        raise ZooError(f"--target is the fraction of parameters to keep, in (0, 1]; got {target}")
    total = model.num_parameters(non_embedding=True)
    kinds = (MLP, Attention) if heads else (MLP,)
    prunable = sum(p.numel() for m in model.modules() if isinstance(m, kinds)
                   for n, p in m.named_parameters() if not (isinstance(m, MLP) and n == "down_proj.bias")
                   and not (isinstance(m, Attention) and n == "o_proj.bias"))
    r = 1 - (1 - target) * total / prunable
    if r <= 0:
        what = "MLP neurons and heads" if heads else "MLP neurons (add --heads true where the family allows)"
        raise ZooError(f"--target {target} cannot be reached by removing {what}: they hold "
                       f"{prunable / total:.0%} of the non-embedding parameters")
    return r


def prune_structured(model: ZooModel, target: float = 0.7, heads: bool = False,
                     scores: Optional[dict[str, torch.Tensor]] = None) -> ZooModel:
    """A new, smaller model of the same family keeping about `target` of the non-embedding parameters:
    the least important MLP neurons (and heads, with `heads`) of every layer removed, the same count in
    every layer of a stack. `scores` (MLP name → (d_ff,)) overrides the magnitude scores."""
    from zoo.families import family_of

    if heads and not head_prunable(model):
        raise ZooError(f"heads of a {model.family} model cannot be removed with the rest unchanged (its head "
                       "width follows d_model / n_head, or its positions are per head); prune MLP neurons only")
    r = keep_ratio(model, target, heads)
    state = {k: v for k, v in model.state_dict().items()}
    d_ff, n_head = {}, None
    for stack_name, stack in stacks(model).items():
        width = stack.config.block.mlp.d_ff
        k = max(1, round(r * width))
        d_ff[stack_name] = k
        for i, layer in enumerate(stack.layers):
            prefix = f"{stack_name}.layers.{i}"
            neuron = (scores or {}).get(f"{prefix}.mlp")
            state.update(_mlp_state(f"{prefix}.mlp", layer.mlp, _keep(neuron_scores(layer.mlp) if neuron is None
                                                                        else neuron, k)))
            if heads:
                n_head = max(1, round(r * layer.self_attn.n_head))
                kept = _keep(head_scores(layer.self_attn), n_head)
                state.update(_attention_state(f"{prefix}.self_attn", layer.self_attn, kept))
    config = _width_updates(model, d_ff, n_head)
    small = family_of(model).build(config)
    small.load_state_dict(state)
    return small.train(model.training)


def magnitude_prune(model: nn.Module, amount: float = 0.3) -> float:
    """Zero the `amount` smallest-magnitude weights of all stack linears together (global L1,
    torch.nn.utils.prune, made permanent). Returns the measured sparsity of those weights."""
    import torch.nn.utils.prune as tprune

    from zoo.compress.quantize import quantizable_linears

    linears = list(quantizable_linears(model).values())
    tprune.global_unstructured([(m, "weight") for m in linears], tprune.L1Unstructured, amount=amount)
    for m in linears:
        tprune.remove(m, "weight")
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    return zeros / sum(m.weight.numel() for m in linears)


def save_checkpoint(model: ZooModel, path, tokenizer=None) -> None:
    """A zoo `.ckpt` (what `zoo fit` writes, minus the loop state): family, config, tokenizer, weights.
    `zoo generate`, `zoo export`, `zoo serve` and `init_from` read it."""
    from pathlib import Path

    from zoo.families import family_of

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    meta = {"family": family_of(model).name, "config": asdict(model.config),
            "tokenizer": tokenizer.to_str() if tokenizer is not None else None}
    torch.save({"zoo": meta, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)


def describe(before: ZooModel, after: ZooModel) -> str:
    n0, n1 = before.num_parameters(non_embedding=True), after.num_parameters(non_embedding=True)
    widths = ", ".join(f"{name}: d_ff {s.config.block.mlp.d_ff}, heads {s.config.block.attention.n_head}"
                       for name, s in stacks(after).items())
    return f"non-embedding parameters {n0:,} -> {n1:,} ({n1 / n0:.1%}); {widths}"


__all__ = ["describe", "head_prunable", "keep_ratio", "magnitude_prune", "prune_structured", "save_checkpoint",
           "taylor_scores"]
