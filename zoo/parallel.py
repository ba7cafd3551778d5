"""Parallelism applied from outside the models, in the order torchtitan uses:

1. tensor parallel (Megatron-LM, Shoeybi et al., 2019), by plan alone: q/k/v and the MLP's up/gate
   projections split column-wise (by output features, so by heads), the attention output and MLP
   down projections row-wise, one all-reduce per branch; a pre-hook hands each attention its
   heads' slice of the score biases;
2. activation checkpointing per block (Chen et al., 2016): keep only each block's input, recompute
   its activations in the backward pass;
3. `torch.compile` per block, in place: the block's forward is compiled, the module stays (names of
   parameters and checkpoint keys do not change; FSDP2's hooks stay outside the compiled code);
4. FSDP2 (`fully_shard`, Zhao et al., 2023) per block, then the root, on the data-parallel axis.

Every zoo family (GPT, BERT, T5, BART, CLIP) is built from `zoo.blocks.TransformerBlock`, so one
plan serves them all; the models stay single-device code. `Task.configure_model` calls `parallelize`
with the device mesh of Lightning's `ModelParallelStrategy` (axes "data_parallel", "tensor_parallel").
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.utils.checkpoint import checkpoint

from zoo.blocks.attention import Attention, ScoreBias
from zoo.blocks.transformer import TransformerBlock
from zoo.errors import ZooError


def transformer_blocks(model: nn.Module) -> list[TransformerBlock]:
    """Every transformer block of a model, in module order (encoder before decoder)."""
    return [m for m in model.modules() if isinstance(m, TransformerBlock)]


def parallelize(
    model: nn.Module,
    mesh: Optional[DeviceMesh] = None,
    compile: bool = False,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Apply tensor parallel, activation checkpointing, compile and FSDP2 to `model`, in place.

    `mesh` is a 2-D mesh with axes "data_parallel" and "tensor_parallel" (None under DDP or one
    device: only checkpointing and compile apply). Tensor parallel applies when its axis has more
    than one rank; FSDP2 always applies on the data-parallel axis, so the same code path runs at
    every mesh shape. Calling it again is a no-op (Lightning calls `configure_model` once per stage).
    """
    if getattr(model, "_zoo_parallelized", False):
        return model
    blocks = transformer_blocks(model)
    if mesh is not None and mesh["tensor_parallel"].size() > 1:
        for block in blocks:
            tensor_parallel_block(block, mesh["tensor_parallel"])
    if activation_checkpointing:
        for block in blocks:
            checkpoint_block(block)
    if compile:
        for block in blocks:
            compile_block(block)
    if mesh is not None:
        shard_fully(model, blocks, mesh["data_parallel"])
    model._zoo_parallelized = True
    return model


# --------------------------------------------------------------------------- tensor parallel
def local_heads(t: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """This rank's slice of a per-head tensor (H, ...). Through DTensor, so that in the backward pass
    the slices' gradients are gathered into the full tensor's gradient on every rank."""
    full = DTensor.from_local(t, mesh, [Replicate()], run_check=False)
    return full.redistribute(mesh, [Shard(0)]).to_local()


def local_bias(bias: Optional[ScoreBias], mesh: DeviceMesh) -> Optional[ScoreBias]:
    if bias is None:
        return None
    slopes = None if bias.alibi_slopes is None else local_heads(bias.alibi_slopes, mesh)
    table = None if bias.t5_table is None else local_heads(bias.t5_table, mesh)
    return dataclasses.replace(bias, alibi_slopes=slopes, t5_table=table)


def tensor_parallel_block(block: TransformerBlock, tp_mesh: DeviceMesh) -> None:
    """Shard one block's attention and MLP projections over `tp_mesh` (Megatron-LM's layout)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    attentions = {name: getattr(block, name) for name in ("self_attn", "cross_attn") if getattr(block, name) is not None}
    for name, attn in attentions.items():
        _check_heads(attn, tp_mesh, name)
    plan = {}
    for name, attn in attentions.items():
        attn.register_forward_pre_hook(_local_bias_hook(tp_mesh), with_kwargs=True)
        plan.update({f"{name}.{p}": ColwiseParallel() for p in ("q_proj", "k_proj", "v_proj")})
        plan[f"{name}.o_proj"] = RowwiseParallel()
    plan["mlp.up_proj"] = ColwiseParallel()
    if block.mlp.gate_proj is not None:
        plan["mlp.gate_proj"] = ColwiseParallel()
    plan["mlp.down_proj"] = RowwiseParallel()
    from zoo.adapters.lora import expand_tensor_parallel_plan  # LoRA adapters shard like their base layers

    parallelize_module(block, tp_mesh, expand_tensor_parallel_plan(block, plan))


def _check_heads(attn: Attention, tp_mesh: DeviceMesh, name: str) -> None:
    tp = tp_mesh.size()
    if attn.n_head % tp or attn.n_kv_head % tp:
        raise ZooError(
            f"tensor parallel size {tp} does not divide the {name} heads (n_head={attn.n_head}, "
            f"n_kv_head={attn.n_kv_head}); set the strategy's tensor_parallel_size to a divisor of both"
        )


def _local_bias_hook(tp_mesh: DeviceMesh):
    """A forward pre-hook giving an attention its rank's slice of the per-head score biases (ALiBi
    slopes, T5 tables), which the stack computes for all heads. The projections need nothing more:
    attention reads its head count off the projected widths."""

    def hook(module, args, kwargs):
        if kwargs.get("bias") is not None:
            kwargs["bias"] = local_bias(kwargs["bias"], tp_mesh)
        return args, kwargs

    return hook


# --------------------------------------------------------------------------- checkpointing, FSDP2
def checkpoint_block(block: nn.Module) -> None:
    """Recompute the block's activations in the backward pass instead of storing them.

    In place (the forward is wrapped on the instance), so parameter names stay the same; the
    non-reentrant checkpoint composes with FSDP2 and is traced by `torch.compile` as one region."""
    forward = block.forward

    def checkpointed(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed


def compile_block(block: nn.Module) -> None:
    """`torch.compile` the block's forward, in place. Not `nn.Module.compile()`: that compiles
    `Module._call_impl`, a frame Dynamo skips (torch's own files) in recent torch, so nothing compiles."""
    block.forward = torch.compile(block.forward)


def shard_fully(model: nn.Module, blocks: list[nn.Module], dp_mesh: DeviceMesh) -> None:
    """FSDP2: each block is one all-gather unit, the root holds the rest (embeddings, heads, norms)."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block, mesh=dp_mesh)
    scalars_as_vectors(model)
    shard_module(model, dp_mesh)


def shard_module(module: nn.Module, dp_mesh: DeviceMesh) -> None:
    """FSDP2 on `module` as one unit. A zoo model's entry points (methods tasks call instead of `forward`:
    a classifier's features, decoding; `Family.entry_points`) get the hooks that gather the root's
    parameters (embeddings, heads, final norms) around `forward`. None of them calls another, or
    `forward`, so the hooks never nest."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from zoo.families import FAMILIES

    fully_shard(module, mesh=dp_mesh)
    family = next((f for f in FAMILIES.values() if isinstance(module, f.model)), None)
    for name in family.entry_points if family is not None else ():
        register_fsdp_forward_method(module, name)


def scalars_as_vectors(model: nn.Module) -> None:
    """FSDP2 shards parameters along dim 0 and refuses 0-dim ones (CLIP's `logit_scale`): give each
    the shape (1,), same value. Models read such a parameter through `.reshape(())`, and load
    either shape (see `CLIP._load_from_state_dict`)."""
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.dim() == 0:
                setattr(module, name, nn.Parameter(p.detach().reshape(1).clone(), requires_grad=p.requires_grad))


def is_sharded(model: nn.Module) -> bool:
    """True when parameters are DTensors (FSDP2 or tensor parallel): every rank must then run each
    forward together, so rank-zero-only work (sampling) must run on all ranks."""
    return any(isinstance(p, DTensor) for p in model.parameters())


# --------------------------------------------------------------------------- gradient clipping
@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for a mix of plain tensors and DTensors on different meshes
    (FSDP2 × tensor parallel), which torch's cannot combine: the gradients are grouped by mesh and
    placements, each group's norm reduced to a full value (one collective per group), then combined."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    groups: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        key = (g.device_mesh, g.placements) if isinstance(g, DTensor) else (None, None)
        groups.setdefault(key, []).append(g)
    norms = [torch.nn.utils.get_total_norm(group, norm_type) for group in groups.values()]
    norms = [n.full_tensor() if isinstance(n, DTensor) else n for n in norms]
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return total
