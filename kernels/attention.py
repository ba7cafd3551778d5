"""Fused attention in Triton, forward and backward: FlashAttention-2 (Dao, 2023).

The score matrix softmax(s·QKᵀ + bias) is never written to HBM: each program keeps a block of
queries in registers and streams key/value blocks past it with the online softmax of Milakov &
Gimelshein (2018), as in FlashAttention (Dao et al., 2022). The backward recomputes the
probabilities from the saved log-sum-exp, with one kernel for dK/dV (a program per key block) and
one for dQ (a program per query block), so nothing is accumulated with atomics and every gradient
is bitwise reproducible. Anatomy follows the Triton tutorial 06-fused-attention.

Inside the kernels, beyond plain attention:

* grouped-query attention (Ainslie et al., 2023): query head h reads key/value head h // (H/Hkv);
* causal masks aligned bottom-right (query i sits at position i + Sk − Sq, as in a KV cache),
  sliding windows |pos_i − j| ≤ w, a key padding mask, and document (segment) masking for packed
  sequences: per-token segment ids, a query seeing only keys of its own segment. Key blocks no query of a block can see
  are never visited, and blocks every query sees fully skip the mask arithmetic;
* ALiBi (Press et al., 2022): −slope_h·|pos_i − j| added to the scaled score;
* T5 relative position buckets (Raffel et al., 2020) with a learned (H, num_buckets) table. The
  kernels look the bucket of r = j − pos_i up in a (2L+1)-entry table made on the host by Hugging
  Face's formula (r clamped to ±L, past which the bucket is constant), so float32-log truncation
  matches HF bit for bit. The table's gradient is reduced deterministically: per-program fp32
  partial sums per bucket, then a fixed-order torch sum.

Softmax runs in base 2: log2(e) is folded into the scale and the biases, so the inner loop uses
exp2. A row with no visible key outputs 0 and gets zero gradients (its log-sum-exp is stored as
+inf so that every recomputed probability is exp2(−inf) = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from kernels._attention_kernels import _attn_bwd_dkdv, _attn_bwd_dq, _attn_bwd_preprocess, _attn_fwd
from kernels._compile import device_smem_limit, keep_fitting, record, runtime_facts
from kernels._device import check_device, is_interpreter
from kernels.t5_buckets import relative_position_bucket, t5_bucket_table

__all__ = ["attention", "reference_attention", "relative_position_bucket"]

LOG2E = 1.4426950408889634
T5_GRAD_ROWS = 16  # query rows per row of the T5-gradient scratch buffer (see _attn_bwd_dq)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

# The interpreter runs programs one by one in numpy: one small config, never autotuned. Block
# shapes differ between kernels so the tests cross block edges in both directions.
_INTERPRETER_BLOCKS = {
    "fwd": {"BLOCK_M": 32, "BLOCK_N": 16},
    "dkdv": {"BLOCK_M": 16, "BLOCK_N": 32},
    "dq": {"BLOCK_M": 32, "BLOCK_N": 16},
}


# Candidate configs (BLOCK_M, BLOCK_N, num_warps, num_stages, largest padded head dim they suit);
# autotuning chooses among those meant for the head dim that the compiler reports free of spills
# and within the device's shared memory (see `_pruner`). `make aot-check` tabulates them all.
_CANDIDATES = {
    "fwd": [(128, 64, 8, 3, 128), (128, 64, 8, 4, 128), (128, 128, 8, 3, 64), (64, 64, 4, 3, 128),
            (64, 32, 4, 2, 256)],
    "dkdv": [(32, 128, 8, 3, 64), (32, 64, 4, 3, 64), (16, 128, 8, 3, 128), (16, 64, 8, 2, 128),
             (16, 64, 4, 2, 256)],
    "dq": [(128, 32, 8, 3, 128), (128, 64, 8, 2, 128), (64, 32, 4, 3, 128), (64, 64, 4, 2, 128),
           (32, 32, 4, 2, 256)],
}
# Below this many query×key pairs per head, tuning costs more than it saves: a fixed config per
# kernel and padded head dim (<= 64, 128, 256), the first of these the compiler reports clean.
_TUNE_MIN_PAIRS = 512 * 512
_FIXED = {
    "fwd": {64: [(64, 64, 4, 2), (64, 32, 4, 2)], 128: [(64, 64, 4, 2), (64, 32, 4, 2)],
            256: [(64, 32, 4, 2), (32, 32, 4, 1)]},
    "dkdv": {64: [(16, 64, 4, 2), (16, 32, 4, 2)], 128: [(16, 64, 8, 2), (16, 32, 4, 2)],
             256: [(16, 32, 4, 2), (16, 32, 4, 1)]},
    "dq": {64: [(64, 32, 4, 2), (32, 32, 4, 2)], 128: [(64, 32, 4, 2), (32, 32, 4, 2)],
           256: [(32, 32, 4, 2), (16, 32, 4, 1)]},
}
_PREPROCESS = triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=3)  # Triton's defaults
_MAX_D = {}  # config -> largest padded head dim it is meant for


def _config(m, n, w, s) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)


def _configs(kind):
    configs = []
    for m, n, w, s, dmax in _CANDIDATES[kind]:
        config = _config(m, n, w, s)
        _MAX_D[config] = dmax
        configs.append(config)
    return configs


def fixed_configs(kind: str, d_pad: int) -> list:
    """The small-problem configs of kernel `kind` at padded head dim `d_pad`, in order of preference."""
    return [_config(*c) for c in _FIXED[kind][max(64, d_pad)]]


def tuned_configs(kind: str, d_pad: int) -> list:
    """The autotune candidates of kernel `kind` meant for padded head dim `d_pad` (before pruning)."""
    return [c for c in _TUNED[kind].configs if d_pad <= _MAX_D[c]]


def _facts_on_device(kind: str, args: dict):
    return lambda config: runtime_facts(_PLAIN[kind], args, config)


def _pruner(kind):
    """Keep the candidates meant for this head dim that compile clean on this device (at least one)."""

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        meant = [c for c in configs if args["D_PAD"] <= _MAX_D.get(c, 256)] or list(configs)
        return keep_fitting(meant, _facts_on_device(kind, args), device_smem_limit())

    return prune


_TUNE_KEY = ["Q_BUCKET", "K_BUCKET", "HEAD_DIM", "GROUP", "CAUSAL", "HAS_WINDOW", "HAS_KPM", "HAS_ALIBI", "HAS_T5",
             "HAS_SEG"]
_PLAIN = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}
_TUNED = {
    name: triton.autotune(_configs(name), key=_TUNE_KEY, prune_configs_by={"early_config_prune": _pruner(name)})(fn)
    for name, fn in _PLAIN.items()
}


_FIXED_CHOICE: dict = {}


def _fixed_choice(name: str, args: dict) -> triton.Config:
    """The first fixed config that compiles clean on this device, remembered per kernel variant so a
    small launch pays for the choice once."""
    key = (name, torch.cuda.current_device(), args["Q"].dtype, args["GROUP"] == 1,
           *(args[k] for k in ("HEAD_DIM", "D_PAD", "CAUSAL", "HAS_WINDOW", "HAS_KPM", "HAS_ALIBI", "HAS_T5",
                                                 "HAS_SEG")))
    if key not in _FIXED_CHOICE:
        facts = _facts_on_device(name, args)
        _FIXED_CHOICE[key] = keep_fitting(fixed_configs(name, args["D_PAD"]), facts, device_smem_limit())[0]
    return _FIXED_CHOICE[key]


def _launch(name: str, rows: int, programs: int, **args) -> None:
    """Launch kernel `name` on a grid of (cdiv(rows, block), programs): one small config under the
    interpreter, a fixed one for small problems on CUDA, autotuned otherwise."""
    block = "BLOCK_N" if name == "dkdv" else "BLOCK_M"
    if record(name, _PLAIN[name], args, fixed_configs(name, args["D_PAD"]) + tuned_configs(name, args["D_PAD"])):
        return
    if is_interpreter():
        cfg = _INTERPRETER_BLOCKS[name]
        _PLAIN[name][(triton.cdiv(rows, cfg[block]), programs)](**args, **cfg)
    elif args["Sq"] * args["Sk"] < _TUNE_MIN_PAIRS:
        cfg = _fixed_choice(name, args)
        _PLAIN[name][(triton.cdiv(rows, cfg.kwargs[block]), programs)](
            **args, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        _TUNED[name][lambda meta: (triton.cdiv(rows, meta[block]), programs)](**args)


@dataclass
class _Spec:
    """Everything about one call except q, k, v and the T5 table, with tensors ready for the kernels."""

    causal: bool
    scale: float
    window: int | None
    kpm: torch.Tensor | None  # (B, Sk) uint8, 1 = attend
    alibi2: torch.Tensor | None  # (H,) fp32 slopes·log2(e)
    t5_bucket: torch.Tensor | None  # (2L+1,) int32
    t5_L: int = 0
    t5_num_buckets: int = 0
    t5_rel: torch.Tensor | None = None  # (H, 2L+1) fp32, filled in by the forward
    seg: torch.Tensor | None = None  # (B, Sk) int32 segment id of each key (queries: the last Sq of them)


def _strides(prefix: str, t: torch.Tensor, row: str) -> dict:
    """Batch, head and row strides of a (B, H, S, D) tensor whose head dim is contiguous."""
    return {f"stride_{prefix}b": t.stride(0), f"stride_{prefix}h": t.stride(1), f"stride_{prefix}{row}": t.stride(2)}


def _common_args(q: torch.Tensor, k: torch.Tensor, spec: _Spec) -> dict:
    B, H, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    dummy = q  # stands in for absent optional tensors; the kernels never read it
    return dict(
        KPM=spec.kpm if spec.kpm is not None else dummy,
        ALIBI=spec.alibi2 if spec.alibi2 is not None else dummy,
        T5REL=spec.t5_rel if spec.t5_rel is not None else dummy,
        SEG=spec.seg if spec.seg is not None else dummy,
        stride_kpm=spec.kpm.stride(0) if spec.kpm is not None else 0,
        stride_seg=spec.seg.stride(0) if spec.seg is not None else 0,
        H=H, GROUP=H // Hkv, Sq=Sq, Sk=Sk, pos_off=Sk - Sq, window=spec.window or 0,
        qk_scale=spec.scale * LOG2E, t5_L=spec.t5_L,
        Q_BUCKET=triton.next_power_of_2(Sq), K_BUCKET=triton.next_power_of_2(Sk),
        HEAD_DIM=D, D_PAD=max(16, triton.next_power_of_2(D)),
        # fp32 inputs get true fp32 products (not tf32), so fp32 stays a precise reference mode
        DOT_PREC="ieee" if q.dtype == torch.float32 else None,
        CAUSAL=spec.causal, HAS_WINDOW=spec.window is not None, HAS_KPM=spec.kpm is not None,
        HAS_ALIBI=spec.alibi2 is not None, HAS_T5=spec.t5_rel is not None, HAS_SEG=spec.seg is not None,
    )


def _forward(q, k, v, spec: _Spec):
    B, H, Sq, D = q.shape
    o = torch.empty((B, H, Sq, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, Sq), device=q.device, dtype=torch.float32)
    _launch("fwd", Sq, B * H, Q=q, K=k, V=v, O=o, LSE=lse, **_strides("q", q, "m"), **_strides("k", k, "n"),
            **_strides("v", v, "n"), **_strides("o", o, "m"), **_common_args(q, k, spec))
    return o, lse


def _backward(do, q, k, v, o, lse, spec: _Spec):
    B, H, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    common = _common_args(q, k, spec)
    delta = torch.empty_like(lse)
    pre = dict(O=o, DO=do, DELTA=delta, **_strides("o", o, "m"), **_strides("do", do, "m"), H=H, Sq=Sq,
               HEAD_DIM=D, D_PAD=common["D_PAD"])
    if not record("preprocess", _attn_bwd_preprocess, pre, [_PREPROCESS]):
        cfg = _PREPROCESS if not is_interpreter() else triton.Config({"BLOCK_M": _INTERPRETER_BLOCKS["dq"]["BLOCK_M"]})
        _attn_bwd_preprocess[(triton.cdiv(Sq, cfg.kwargs["BLOCK_M"]), B * H)](
            **pre, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    dq = torch.empty((B, H, Sq, D), device=q.device, dtype=q.dtype)
    dk = torch.empty((B, Hkv, Sk, D), device=q.device, dtype=k.dtype)
    dv = torch.empty_like(dk)
    inputs = dict(Q=q, K=k, V=v, DO=do, LSE=lse, DELTA=delta, **_strides("q", q, "m"), **_strides("k", k, "n"),
                  **_strides("v", v, "n"), **_strides("do", do, "m"), sm_scale=spec.scale, **common)
    _launch("dkdv", Sk, B * Hkv, DK=dk, DV=dv, **_strides("dk", dk, "n"), **inputs)
    nb = spec.t5_num_buckets
    t5_rows = triton.cdiv(Sq, T5_GRAD_ROWS)
    nb_pad = max(16, triton.next_power_of_2(nb))
    t5_grad = torch.empty((B * H, t5_rows, nb_pad) if spec.t5_rel is not None else (1,),
                          device=q.device, dtype=torch.float32)
    _launch("dq", Sq, B * H, DQ=dq, T5BUCKET=spec.t5_bucket if spec.t5_bucket is not None else lse,
            T5GRAD=t5_grad, t5_rows=t5_rows, NB_PAD=nb_pad, **_strides("dq", dq, "m"), **inputs)
    dt5 = None
    if spec.t5_rel is not None:  # a fixed-order sum over batch and query blocks: deterministic
        dt5 = t5_grad.view(B, H, t5_rows, nb_pad).sum(dim=(0, 2))[:, :nb]
    return dq, dk, dv, dt5


# ---------------------------------------------------------------------------------------------
# Autograd and the public functions
# ---------------------------------------------------------------------------------------------


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, t5_bias, spec: _Spec):
        o, lse = _forward(q, k, v, spec)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.spec = spec
        ctx.t5_dtype = t5_bias.dtype if t5_bias is not None else None
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        do = do if do.stride(-1) == 1 else do.contiguous()
        dq, dk, dv, dt5 = _backward(do, q, k, v, o, lse, ctx.spec)
        if dt5 is not None:
            dt5 = dt5.to(ctx.t5_dtype)
        return dq, dk, dv, dt5, None


def _validate(q, k, v, key_padding_mask, alibi_slopes, t5_bias, window, segment_ids=None) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention expects q (B, H, Sq, D) and k, v (B, Hkv, Sk, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, H, _, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k and v must be (B={B}, Hkv, Sk, D={D}) alike, got {tuple(k.shape)} and {tuple(v.shape)}")
    if H % k.shape[1]:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[1]})")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, k.shape[2]):
        raise ValueError(f"key_padding_mask must be (B, Sk) = {(B, k.shape[2])}, got {tuple(key_padding_mask.shape)}")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (H,):
        raise ValueError(f"alibi_slopes must be (H,) = ({H},), got {tuple(alibi_slopes.shape)}")
    if t5_bias is not None and (t5_bias.dim() != 2 or t5_bias.shape[0] != H):
        raise ValueError(f"t5_bias must be (H={H}, num_buckets), got {tuple(t5_bias.shape)}")
    if window is not None and window < 0:
        raise ValueError(f"window must be >= 0 or None, got {window}")
    if segment_ids is not None:
        if tuple(segment_ids.shape) != (B, k.shape[2]):
            raise ValueError(f"segment_ids must be (B, Sk) = {(B, k.shape[2])}, got {tuple(segment_ids.shape)}")
        if segment_ids.dtype.is_floating_point or segment_ids.dtype == torch.bool:
            raise ValueError(f"segment_ids must be integers, got {segment_ids.dtype}")
        if q.shape[2] > k.shape[2]:
            raise ValueError(f"segment_ids need Sq <= Sk (query i has the segment of key i + Sk - Sq), "
                             f"got Sq={q.shape[2]} > Sk={k.shape[2]}")


def _validate_t5(t5_bias, num_buckets: int, max_distance: int, bidirectional: bool) -> None:
    if t5_bias is None:
        return
    if t5_bias.shape[1] != num_buckets:
        raise ValueError(f"t5_bias has {t5_bias.shape[1]} buckets but t5_num_buckets={num_buckets}")
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if max_exact < 1 or max_distance <= max_exact:
        # the log-spaced buckets would divide by log(max_distance / max_exact) <= 0
        raise ValueError(f"T5 buckets need t5_max_distance > {max(max_exact, 0)} (the exact range) for "
                         f"num_buckets={num_buckets}, bidirectional={bidirectional}; got {max_distance}")


def _check_kernel_inputs(q, k, v) -> None:
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"attention kernel takes q, k, v of one dtype among float16, bfloat16, float32; "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[3] > 256:
        raise ValueError(f"attention kernel supports head dims up to 256, got {q.shape[3]}")
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        raise RuntimeError("the Triton interpreter has no bfloat16: run bf16 attention on CUDA or use torch")


def attention(q, k, v, *, causal=False, scale=None, window=None, key_padding_mask=None, alibi_slopes=None,
              t5_bias=None, t5_num_buckets=32, t5_max_distance=128, t5_bidirectional=True, segment_ids=None):
    """Fused attention softmax(scale·QKᵀ + bias)·V over (B, H, Sq, D) queries, never materializing scores.

    k, v are (B, Hkv, Sk, D) with H a multiple of Hkv (grouped-query attention). `causal` aligns
    bottom-right (query i sits at position i + Sk − Sq); `window` w keeps keys with |pos_i − j| ≤ w;
    `key_padding_mask` (B, Sk) is True where keys are attended. `alibi_slopes` (H,) adds
    −slope·|pos_i − j|; `t5_bias` (H, num_buckets) adds the learned T5 bias of bucket(j − pos_i)
    and receives a (deterministic) gradient. `segment_ids` (B, Sk) integers give each key a segment
    (document) of a packed sequence; query i has the segment of key i + Sk − Sq and sees only keys of
    its own segment (combined with the other masks). Rows that see no key return 0. The scale
    defaults to 1/sqrt(D). Runs on CUDA, or on CPU with TRITON_INTERPRET=1; otherwise raises RuntimeError.
    """
    _validate(q, k, v, key_padding_mask, alibi_slopes, t5_bias, window, segment_ids)
    _validate_t5(t5_bias, t5_num_buckets, t5_max_distance, t5_bidirectional)
    check_device(q, k, v, key_padding_mask, alibi_slopes, t5_bias, segment_ids)
    _check_kernel_inputs(q, k, v)
    if q.numel() == 0 or k.shape[2] == 0:  # nothing to attend to: every row is empty
        return q.new_zeros(q.shape)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    spec = _make_spec(q, causal, scale, window, key_padding_mask, alibi_slopes, t5_bias, t5_num_buckets,
                      t5_max_distance, t5_bidirectional, segment_ids=segment_ids)
    return _FlashAttention.apply(q, k, v, t5_bias, spec)


def _make_spec(q, causal, scale, window, key_padding_mask, alibi_slopes, t5_bias, t5_num_buckets=32,
               t5_max_distance=128, t5_bidirectional=True, *, segment_ids=None) -> _Spec:
    """The kernels' view of `attention`'s options (tensors detached, converted and contiguous)."""
    spec = _Spec(
        causal=bool(causal),
        scale=float(q.shape[3] ** -0.5 if scale is None else scale),
        window=None if window is None else int(window),
        kpm=None if key_padding_mask is None else key_padding_mask.to(torch.uint8).contiguous(),
        alibi2=None if alibi_slopes is None else (alibi_slopes.detach().float() * LOG2E).contiguous(),
        t5_bucket=None,
        seg=None if segment_ids is None else segment_ids.to(torch.int32).contiguous(),
    )
    if t5_bias is not None:
        spec.t5_bucket, spec.t5_L = t5_bucket_table(q.device, t5_num_buckets, t5_max_distance, t5_bidirectional)
        spec.t5_num_buckets = t5_num_buckets
        # (H, 2L+1): the bias of every clamped relative position, in log2 units
        spec.t5_rel = (t5_bias.detach().float()[:, spec.t5_bucket.long()] * LOG2E).contiguous()
    return spec


def reference_attention(q, k, v, *, causal=False, scale=None, window=None, key_padding_mask=None,
                        alibi_slopes=None, t5_bias=None, t5_num_buckets=32, t5_max_distance=128,
                        t5_bidirectional=True, segment_ids=None):
    """Plain-torch `attention`: materializes the (B, H, Sq, Sk) scores. Half precision is computed in
    float32, float64 stays float64; the result has q's dtype. Rows that see no key return 0."""
    _validate(q, k, v, key_padding_mask, alibi_slopes, t5_bias, window, segment_ids)
    _validate_t5(t5_bias, t5_num_buckets, t5_max_distance, t5_bidirectional)
    B, H, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    group = H // Hkv
    qf = q.to(dtype)
    kf = k.to(dtype).repeat_interleave(group, dim=1)
    vf = v.to(dtype).repeat_interleave(group, dim=1)
    scores = (qf @ kf.transpose(-1, -2)) * (D**-0.5 if scale is None else scale)  # (B, H, Sq, Sk)
    pos = torch.arange(Sq, device=q.device)[:, None] + (Sk - Sq)  # query positions, bottom-right
    rel = torch.arange(Sk, device=q.device)[None, :] - pos  # key minus query position (Sq, Sk)
    if alibi_slopes is not None:
        scores = scores - alibi_slopes.to(dtype)[:, None, None] * rel.abs().to(dtype)
    if t5_bias is not None:
        buckets = relative_position_bucket(rel, t5_bidirectional, t5_num_buckets, t5_max_distance)
        scores = scores + t5_bias.to(dtype)[:, buckets]
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if causal:
        keep = keep & (rel <= 0)
    if window is not None:
        keep = keep & (rel.abs() <= window)
    keep = keep[None, None].expand(B, H, Sq, Sk)
    if key_padding_mask is not None:
        keep = keep & key_padding_mask.bool()[:, None, None, :]
    if segment_ids is not None:
        keep = keep & (segment_ids[:, Sk - Sq:, None] == segment_ids[:, None, :])[:, None]
    scores = scores.masked_fill(~keep, float("-inf"))
    # rows with no key: softmax over all -inf is NaN, so give them finite scores and zero weights
    alive = keep.any(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(~alive, 0.0), dim=-1) * alive
    return (probs @ vf).to(q.dtype)
