"""LayerNorm (Ba et al., 2016) and RMSNorm (Zhang & Sennrich, 2019) in Triton, forward and backward.

Follows the anatomy of the Triton tutorial 05-layer-norm: `@triton.jit` kernels, launchers that
compute the grid, an `autograd.Function`, the public functions and plain-torch references. Where
it departs from the tutorial, it is for these reasons:

* dW/dB are reduced deterministically. Each backward program owns a fixed set of rows, keeps fp32
  partial sums in registers and writes one row of a `(num_programs, N)` buffer; a second kernel
  sums that buffer over programs in a fixed order. No locks or atomics, so two backward passes
  on the same device give bit-identical gradients (the tutorial's lock-and-add order is racy).
* Short rows are processed BLOCK_M at a time, so a hidden size of 24 still fills a program.
* Rows longer than the largest block that fits in registers take a looped path: the forward walks
  the row in chunks (mean, variance, output), and the backward first computes the two per-row
  reductions it needs, then computes dx and the partials column chunk by column chunk.

Notation (one row): x̂ = (x - μ)·rstd for LayerNorm, x̂ = x·rstd for RMSNorm, g = w ⊙ dy. Then

    y  = x̂ ⊙ w (+ b)
    dx = rstd · (g - x̂·c1 - c2),   c1 = mean(x̂ ⊙ g),  c2 = mean(g)   (c2 = 0 for RMSNorm)
    dw = Σ_rows dy ⊙ x̂,            db = Σ_rows dy

Statistics and all accumulations are fp32; outputs are stored in the input's dtype and parameter
gradients in the parameter's dtype.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels._compile import record
from kernels._device import check_device, is_interpreter, on_device

# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _norm_fwd_fused(
    X,  # input (M, N), rows `stride_x` elements apart, last dim contiguous
    Y,  # output (M, N) contiguous, input dtype
    W,  # weight (N,)
    B,  # bias (N,); never read unless HAS_BIAS
    Mean,  # per-row mean (M,) fp32; never written for RMSNorm
    Rstd,  # per-row 1/std (1/rms for RMSNorm) (M,) fp32, kept for the backward
    stride_x,  # elements between consecutive rows of X
    M,  # number of rows
    N,  # hidden size (elements per row)
    eps,  # added to the variance (mean square for RMSNorm) under the square root
    IS_RMS: tl.constexpr,  # RMSNorm: no centring, no bias
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # power of two >= N: a whole row sits in registers, read once
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)  # M * N can pass 2**31 elements
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if IS_RMS:
        xc = x
    else:
        mean = tl.sum(x, axis=1) / N
        # padding must not count towards the variance, so zero it after centring
        xc = tl.where(mask, x - mean[:, None], 0.0)
        tl.store(Mean + rows, mean, mask=row_ok)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
    tl.store(Rstd + rows, rstd, mask=row_ok)
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows64[:, None] * N + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _norm_fwd_looped(
    X, Y, W, B, Mean, Rstd,  # as in _norm_fwd_fused
    stride_x, M, N, eps,  # as in _norm_fwd_fused
    IS_RMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # chunk of a row handled per step; N may be any multiple of it or not
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    x_rows = X + rows64[:, None] * stride_x
    mean = tl.zeros([BLOCK_M], dtype=tl.float32)
    if not IS_RMS:
        # accumulate elementwise and reduce once: fewer cross-lane sums, better rounding
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_ok[:, None] & (cols < N)[None, :]
            acc += tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(acc, axis=1) / N
        tl.store(Mean + rows, mean, mask=row_ok)
    # a second pass for the variance (not E[x²] - μ²), which cancels badly when |μ| >> σ
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = row_ok[:, None] & (cols < N)[None, :]
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        xc = tl.where(mask, x - mean[:, None], 0.0)
        acc += xc * xc
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / N + eps)
    tl.store(Rstd + rows, rstd, mask=row_ok)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = row_ok[:, None] & (cols < N)[None, :]
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
        y = (x - mean[:, None]) * rstd[:, None] * w[None, :]
        if HAS_BIAS:
            y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + rows64[:, None] * N + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _norm_bwd_row_sums(
    X, DY, W, Mean, Rstd,  # saved input, incoming gradient, weight and statistics
    C1,  # out: per-row mean(x̂ ⊙ g) (M,) fp32
    C2,  # out: per-row mean(g) (M,) fp32; never written for RMSNorm
    stride_x, stride_dy, M, N,
    IS_RMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # chunk size: used only when a row does not fit in one block
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows64 = rows.to(tl.int64)
    rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
    mean = tl.zeros([BLOCK_M], dtype=tl.float32)
    if not IS_RMS:
        mean = tl.load(Mean + rows, mask=row_ok, other=0.0)
    acc1 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = row_ok[:, None] & (cols < N)[None, :]
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
        g = w[None, :] * dy  # zero on padding, so x̂'s padding values never leak in
        acc1 += (x - mean[:, None]) * rstd[:, None] * g
        acc2 += g
    tl.store(C1 + rows, tl.sum(acc1, axis=1) / N, mask=row_ok)
    if not IS_RMS:
        tl.store(C2 + rows, tl.sum(acc2, axis=1) / N, mask=row_ok)


@triton.jit
def _norm_bwd(
    X, DY, W, Mean, Rstd,  # saved input, incoming gradient, weight and statistics
    DX,  # out: input gradient (M, N) contiguous, input dtype
    C1, C2,  # per-row reductions from _norm_bwd_row_sums; read only if ROW_SUMS_GIVEN
    Partial,  # out: (1 or 2, num_programs(0), N) fp32 partial dW (and dB) sums
    stride_x, stride_dy, M, N,
    IS_RMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ROW_SUMS_GIVEN: tl.constexpr,  # False: BLOCK_N >= N and c1, c2 are reduced here, in one pass
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # columns handled by this program (program_id(1) picks the chunk)
):
    pid = tl.program_id(0)
    num_progs = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # a fixed, strided set of row blocks per program: the summation order never changes
    for row_block in range(pid, tl.cdiv(M, BLOCK_M), num_progs):
        rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        rows64 = rows.to(tl.int64)
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
        if IS_RMS:
            xhat = x * rstd[:, None]
        else:
            xhat = (x - tl.load(Mean + rows, mask=row_ok, other=0.0)[:, None]) * rstd[:, None]
        g = w[None, :] * dy  # zero on padding
        if ROW_SUMS_GIVEN:
            c1 = tl.load(C1 + rows, mask=row_ok, other=0.0)
        else:
            c1 = tl.sum(xhat * g, axis=1) / N
        dx = g - xhat * c1[:, None]
        if not IS_RMS:
            if ROW_SUMS_GIVEN:
                c2 = tl.load(C2 + rows, mask=row_ok, other=0.0)
            else:
                c2 = tl.sum(g, axis=1) / N
            dx -= c2[:, None]
        dx *= rstd[:, None]
        tl.store(DX + rows64[:, None] * N + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
        if HAS_BIAS:
            db_acc += dy
    tl.store(Partial + pid * N + cols, tl.sum(dw_acc, axis=0), mask=col_ok)
    if HAS_BIAS:
        tl.store(Partial + (num_progs + pid) * N + cols, tl.sum(db_acc, axis=0), mask=col_ok)


@triton.jit
def _sum_partials(
    Partial,  # (P, N) fp32 partial sums, one row per backward program
    Out,  # out: (N,) column sums, stored in the parameter's dtype
    P,  # number of partial rows
    N,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for start in range(0, P, BLOCK_P):
        ps = start + tl.arange(0, BLOCK_P)
        mask = (ps < P)[:, None] & col_ok[None, :]
        acc += tl.load(Partial + ps[:, None] * N + cols[None, :], mask=mask, other=0.0)
    tl.store(Out + cols, tl.sum(acc, axis=0).to(Out.dtype.element_ty), mask=col_ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

# The interpreter pays per program and per op, not per element: one modest fixed config, small
# enough that hidden 4099 and 65536 exercise the looped path in the CPU tests.
_INTERPRET_BLOCK = 1024
# On a GPU a whole row lives in registers up to these sizes; the backward holds ~8 row-sized fp32
# tiles at once, so it spills sooner than the forward.
_GPU_FUSED_FWD, _GPU_FUSED_BWD, _GPU_CHUNK = 16384, 8192, 4096
_GPU_TILE_FWD, _GPU_TILE_BWD = 4096, 2048  # elements per program for short rows


@dataclass(frozen=True)
class _Config:
    block_m: int  # rows per program
    block_n: int  # columns per block
    looped: bool  # True when a row spans several blocks
    num_warps: int


def _config(n: int, backward: bool) -> _Config:
    """Block shape for rows of `n` elements, chosen from n alone (no autotuning)."""
    if is_interpreter():
        limit, chunk, tile = _INTERPRET_BLOCK, _INTERPRET_BLOCK, _INTERPRET_BLOCK
    else:
        limit = _GPU_FUSED_BWD if backward else _GPU_FUSED_FWD
        chunk, tile = _GPU_CHUNK, _GPU_TILE_BWD if backward else _GPU_TILE_FWD
    block_n = triton.next_power_of_2(n)
    looped = block_n > limit
    if looped:
        block_n = chunk
    block_m = 1 if looped else max(1, tile // block_n)
    # ~8 values per thread per tile: the backward then fits in ~90 registers (checked with
    # cuobjdump on sm_90), leaving room for 2-3 programs per SM to hide memory latency
    num_warps = min(32, max(4, block_m * block_n // 256))
    return _Config(block_m, block_n, looped, num_warps)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_programs(row_blocks: int, col_blocks: int, device: torch.device) -> int:
    """Backward programs along the rows: enough to fill the GPU twice over, never more than rows."""
    if device.type != "cuda":
        return max(1, min(row_blocks, 4))  # the interpreter: few programs, still several partial rows
    index = device.index if device.index is not None else torch.cuda.current_device()
    target = max(1, 2 * _sm_count(index) // col_blocks)
    return max(1, min(row_blocks, target))


def _forward(x: torch.Tensor, weight, bias, eps: float, is_rms: bool):
    """Launch the forward on rows `x` (M, N); returns y, mean (None for RMSNorm), rstd."""
    m, n = x.shape
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    mean = None if is_rms else torch.empty(m, dtype=torch.float32, device=x.device)
    if m == 0:
        return y, mean, rstd
    cfg = _config(n, backward=False)
    kernel = _norm_fwd_looped if cfg.looped else _norm_fwd_fused
    args = dict(X=x, Y=y, W=weight, B=weight if bias is None else bias, Mean=rstd if mean is None else mean,
                Rstd=rstd, stride_x=x.stride(0), M=m, N=n, eps=eps, IS_RMS=is_rms, HAS_BIAS=bias is not None)
    _launch("fwd_looped" if cfg.looped else "fwd", kernel, (triton.cdiv(m, cfg.block_m),), args, cfg)
    return y, mean, rstd


def _backward(dy: torch.Tensor, x: torch.Tensor, weight, bias, mean, rstd, is_rms: bool):
    """Launch the backward; returns dx (M, N), dw and db (None without bias) in the params' dtypes."""
    m, n = x.shape
    dx = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return dx, torch.zeros_like(weight), None if bias is None else torch.zeros_like(bias)
    cfg = _config(n, backward=True)
    row_blocks = triton.cdiv(m, cfg.block_m)
    col_blocks = triton.cdiv(n, cfg.block_n)
    progs = _num_programs(row_blocks, col_blocks, x.device)
    partial = torch.empty((1 if bias is None else 2, progs, n), dtype=torch.float32, device=x.device)
    mean_arg = rstd if mean is None else mean  # a valid pointer that RMSNorm never reads
    c1 = c2 = rstd
    if cfg.looped:
        c1 = torch.empty(m, dtype=torch.float32, device=x.device)
        c2 = c1 if is_rms else torch.empty_like(c1)
        _launch("bwd_row_sums", _norm_bwd_row_sums, (row_blocks,), dict(
            X=x, DY=dy, W=weight, Mean=mean_arg, Rstd=rstd, C1=c1, C2=c2, stride_x=x.stride(0),
            stride_dy=dy.stride(0), M=m, N=n, IS_RMS=is_rms), cfg)
    _launch("bwd", _norm_bwd, (progs, col_blocks), dict(
        X=x, DY=dy, W=weight, Mean=mean_arg, Rstd=rstd, DX=dx, C1=c1, C2=c2, Partial=partial,
        stride_x=x.stride(0), stride_dy=dy.stride(0), M=m, N=n, IS_RMS=is_rms, HAS_BIAS=bias is not None,
        ROW_SUMS_GIVEN=cfg.looped), cfg)
    dw = _column_sums(partial[0], weight)
    db = None if bias is None else _column_sums(partial[1], bias)
    return dx, dw, db


def _column_sums(partial: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Sum a (P, N) fp32 partial buffer over P, in a fixed order, into a tensor like `param`."""
    progs, n = partial.shape
    out = torch.empty(n, dtype=param.dtype, device=param.device)
    block_n = 1024 if is_interpreter() else 256
    block_p = min(32, triton.next_power_of_2(progs))
    config = triton.Config({"BLOCK_P": block_p, "BLOCK_N": block_n}, num_warps=4, num_stages=3)
    args = dict(Partial=partial, Out=out, P=progs, N=n)
    if not record("sum_partials", _sum_partials, args, [config]):
        _sum_partials[(triton.cdiv(n, block_n),)](**args, **config.kwargs, num_warps=4, num_stages=3)
    return out


def _launch(name: str, kernel, grid: tuple, args: dict, cfg: _Config) -> None:
    """Launch `kernel` on `grid` with block shape `cfg` (or record it: see kernels._compile)."""
    # num_stages 3 is Triton's default on CUDA, written out so that the AOT check compiles the same
    config = triton.Config({"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n}, num_warps=cfg.num_warps, num_stages=3)
    if not record(name, kernel, args, [config]):
        kernel[grid](**args, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def _as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """View `t` as (rows, n) with a unit last stride, copying only when it must."""
    rows = t.reshape(-1, n)
    return rows if rows.stride(-1) == 1 or rows.shape[0] * n == 0 else rows.contiguous()


class _Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, is_rms):
        n = x.shape[-1]
        x2 = _as_rows(x, n)
        with on_device(x):
            y, mean, rstd = _forward(x2, weight.contiguous(), None if bias is None else bias.contiguous(), eps, is_rms)
        ctx.save_for_backward(x2, weight, bias, mean, rstd)
        ctx.is_rms = is_rms
        return y.view(x.shape)

    @staticmethod
    @once_differentiable  # the backward runs kernels, not differentiable torch ops
    def backward(ctx, dy):
        x2, weight, bias, mean, rstd = ctx.saved_tensors
        bias_c = None if bias is None else bias.contiguous()
        with on_device(x2):
            dx, dw, db = _backward(_as_rows(dy, x2.shape[1]), x2, weight.contiguous(), bias_c, mean, rstd, ctx.is_rms)
        return dx.view(dy.shape), dw, db, None, None


# ---------------------------------------------------------------------------------------------
# Public functions and references
# ---------------------------------------------------------------------------------------------

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _validate(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"cannot normalize a tensor of shape {tuple(x.shape)}: the last dim is empty")
    if x.dtype not in _DTYPES:
        raise TypeError(f"norm kernels take float32, float16 or bfloat16 inputs, got {x.dtype}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (x.shape[-1],):
            raise ValueError(f"{name} must have shape ({x.shape[-1]},) to match x's last dim, got {tuple(p.shape)}")
    check_device(x, weight, bias)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dim of `x` (any leading shape); output in x's dtype."""
    _validate(x, weight, bias)
    return _Norm.apply(x, weight, bias, float(eps), False)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm as in T5/LLaMA: x · rsqrt(mean(x²) + eps) · weight, in fp32, output in x's dtype."""
    _validate(x, weight, None)
    return _Norm.apply(x, weight, None, float(eps), True)


def reference_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Plain-torch LayerNorm with the kernel's semantics (fp32 math, or fp64 for fp64 inputs)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dtype)
    mean = xf.mean(-1, keepdim=True)
    var = (xf - mean).pow(2).mean(-1, keepdim=True)  # biased, as in the paper and torch
    y = (xf - mean) * torch.rsqrt(var + eps) * weight.to(dtype)
    if bias is not None:
        y = y + bias.to(dtype)
    return y.to(x.dtype)


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain-torch RMSNorm with the kernel's semantics (fp32 math, or fp64 for fp64 inputs)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dtype)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(dtype)
    return y.to(x.dtype)
