"""Kernel benchmarks: our Triton attention and norms against what torch offers, on one GPU.

Attention (FlashAttention-2 accounting, Dao 2023): FLOPs = 4·B·H·D·(unmasked (q, k) pairs) for the
forward, 2.5× that for the backward and 3.5× for forward+backward, so a causal kernel is not
credited for the half of the matrix it skips. Compared: ours (`kernels.attention`), eager
(materialized softmax), `torch.compile` of eager, SDPA with each backend forced separately, and
FlexAttention (compiled; score_mod for ALiBi/T5, block mask for causal/window).
Norms: GB/s with 2·M·N·bytes moved forward and 3·M·N·bytes backward, also as a % of the
device's copy bandwidth (x.copy_ on 1 GiB: read + write). Compared: ours, eager, compiled.

Timings are medians of `triton.testing.do_bench` (CUDA events, L2 flushed between runs); peak
memory is `torch.cuda.max_memory_allocated` during the measurement (it includes the inputs and
do_bench's 256 MB flush buffer). A failure (unsupported shape, OOM, compile error) is recorded
in the row's `error` column and the run goes on.

    python benchmarks/kernel_bench.py --quick
    python benchmarks/kernel_bench.py --what attention --dtype bf16 --seq 1024 4096

Writes benchmarks/results/kernels-<device>.{csv,json} and PNG plots beside them.
"""

from __future__ import annotations

import argparse
import csv
import gc
import itertools
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # as a script: the checkout (zoo, kernels) first on sys.path
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

NO_GPU_MESSAGE = "no CUDA device: kernel benchmarks need a GPU"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("causal", "full", "window", "alibi", "t5")
ATTN_IMPLS = ("ours", "eager", "compiled", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "flex")
NORM_IMPLS = ("ours", "eager", "compiled")
MODES = ("fwd", "bwd", "fwd+bwd")
BWD_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}  # attention FLOPs relative to the forward
NORM_BYTES = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}  # tensor-sized reads+writes per pass
T5_BUCKETS, T5_MAX_DISTANCE = 32, 128
FIELDS = ["date", "device", "torch", "triton", "kind", "variant", "impl", "mode", "dtype", "batch", "heads",
          "seq", "head_dim", "rows", "hidden", "ms", "tflops", "gbps", "pct_copy", "peak_mib", "error"]


# ---- FLOP and byte accounting ----------------------------------------------------------------


def unmasked_pairs(sq: int, sk: int, causal: bool, window: int | None) -> int:
    """Visible (query, key) pairs, queries aligned bottom-right (query i sits at i + sk - sq)."""
    pos = torch.arange(sk - sq, sk, dtype=torch.int64)
    lo = torch.zeros_like(pos)
    hi = torch.full_like(pos, sk - 1)
    if causal:
        hi = torch.minimum(hi, pos)
    if window is not None:  # |pos - j| <= window
        lo = torch.maximum(lo, pos - window)
        hi = torch.minimum(hi, pos + window)
    return int((hi - lo + 1).clamp_min(0).sum())


def attention_flops(batch, heads, sq, sk, head_dim, causal=False, window=None, mode="fwd") -> float:
    """4·B·H·D per visible pair (QKᵀ and PV, 2 FLOPs per multiply-add), scaled for the backward."""
    return 4.0 * batch * heads * head_dim * unmasked_pairs(sq, sk, causal, window) * BWD_FACTOR[mode]


def _variant_masking(variant: str, window: int) -> tuple[bool, int | None]:
    """(causal, window) of a benchmark variant: ALiBi and window are decoder-style (causal)."""
    return variant in ("causal", "window", "alibi"), window if variant == "window" else None


# ---- Implementations under test ----------------------------------------------------------------


def score_bias_and_keep(s, device, causal, window, slopes, t5_table, rel_bucket):
    """The additive fp32 bias (H, S, S) or None, and the boolean keep-mask (S, S) or None."""
    idx = torch.arange(s, device=device)
    rel = idx[None, :] - idx[:, None]  # key position - query position
    bias = keep = None
    if slopes is not None:
        bias = -slopes[:, None, None] * rel.abs()
    if t5_table is not None:
        bias = t5_table[:, rel_bucket[rel + s - 1]]
    if causal:
        keep = rel <= 0
    if window is not None:
        keep = (rel.abs() <= window) if keep is None else keep & (rel.abs() <= window)
    return bias, keep


def eager_attention(q, k, v, scale, causal, window, slopes, t5_table, rel_bucket):
    """softmax(scale·QKᵀ + bias, masked)·V with the score matrix materialized in fp32."""
    scores = torch.matmul(q, k.transpose(-2, -1)).float() * scale  # (B, H, S, S)
    bias, keep = score_bias_and_keep(q.shape[-2], q.device, causal, window, slopes, t5_table, rel_bucket)
    if bias is not None:
        scores = scores + bias
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1).to(q.dtype), v)


def _attention_setup(variant, batch, heads, seq, head_dim, dtype, device, window):
    """Inputs and the positional extras a variant needs (ALiBi slopes, T5 table and buckets)."""
    from zoo.blocks.positions import alibi_slopes, relative_position_bucket

    g = torch.Generator(device=device).manual_seed(0)
    qkv = [torch.randn(batch, heads, seq, head_dim, device=device, dtype=dtype, generator=g).requires_grad_()
           for _ in range(3)]
    causal, win = _variant_masking(variant, window)
    ctx = dict(scale=head_dim**-0.5, causal=causal, window=win, slopes=None, t5_table=None, rel_bucket=None)
    if variant == "alibi":
        ctx["slopes"] = alibi_slopes(heads).to(device)
    if variant == "t5":
        ctx["t5_table"] = torch.randn(heads, T5_BUCKETS, device=device, generator=g)
        rel = torch.arange(-(seq - 1), seq, device=device)
        ctx["rel_bucket"] = relative_position_bucket(rel, True, T5_BUCKETS, T5_MAX_DISTANCE)
    return qkv, ctx


def _sdpa_mask(ctx, seq, q):
    """SDPA's additive attn_mask (1, H|1, S, S) in q's dtype; None for plain causal/full (is_causal)."""
    keys = ("causal", "window", "slopes", "t5_table", "rel_bucket")
    bias, keep = score_bias_and_keep(seq, q.device, *(ctx[k] for k in keys))
    if bias is None and ctx["window"] is None:
        return None
    bias = (torch.zeros(1, seq, seq, device=q.device) if bias is None else bias).to(q.dtype)
    return (bias if keep is None else bias.masked_fill_(~keep, float("-inf")))[None]


def _flex_mods(ctx, seq):
    """FlexAttention score_mod and mask_mod for a variant (either may be None)."""
    score_mod = mask_mod = None
    slopes, table, bucket, win = ctx["slopes"], ctx["t5_table"], ctx["rel_bucket"], ctx["window"]
    if slopes is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx).abs()
    if table is not None:
        def score_mod(score, b, h, q_idx, kv_idx):  # noqa: F811
            return score + table[h, bucket[kv_idx - q_idx + seq - 1]]
    causal = ctx["causal"]
    if win is not None:
        def mask_mod(b, h, q_idx, kv_idx):
            return ((kv_idx <= q_idx) | (not causal)) & ((q_idx - kv_idx).abs() <= win)
    elif causal:  # the plain causal mask, without the window's extra compare in partial blocks
        def mask_mod(b, h, q_idx, kv_idx):  # noqa: F811
            return kv_idx <= q_idx
    return score_mod, mask_mod


def _attention_impl(name, qkv, ctx, seq):
    """A zero-argument callable running implementation `name` on the inputs (may raise)."""
    q, k, v = qkv
    scale, causal, window = ctx["scale"], ctx["causal"], ctx["window"]
    if name == "ours":
        import kernels

        kw = dict(causal=causal, scale=scale, window=window)
        if ctx["slopes"] is not None:
            kw["alibi_slopes"] = ctx["slopes"]
        if ctx["t5_table"] is not None:
            kw.update(t5_bias=ctx["t5_table"], t5_num_buckets=T5_BUCKETS, t5_max_distance=T5_MAX_DISTANCE,
                      t5_bidirectional=True)
        return lambda: kernels.attention(q, k, v, **kw)
    args = (scale, causal, window, ctx["slopes"], ctx["t5_table"], ctx["rel_bucket"])
    if name == "eager":
        return lambda: eager_attention(q, k, v, *args)
    if name == "compiled":
        compiled = torch.compile(eager_attention, dynamic=False)
        return lambda: compiled(q, k, v, *args)
    if name.startswith("sdpa-"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name[5:]]
        mask = _sdpa_mask(ctx, seq, q)
        is_causal = causal and mask is None

        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)
        return run
    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        score_mod, mask_mod = _flex_mods(ctx, seq)
        block_mask = None if mask_mod is None else create_block_mask(mask_mod, None, None, seq, seq, device=q.device)
        flex = torch.compile(flex_attention, dynamic=False)
        return lambda: flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    raise ValueError(f"unknown attention implementation {name!r}")


def _norm_impl(name, kind, x, w, b):
    import kernels

    if name == "ours":
        return (lambda: kernels.rms_norm(x, w)) if kind == "rms" else (lambda: kernels.layer_norm(x, w, b))
    if name == "eager":
        n = (x.shape[-1],)
        return (lambda: F.rms_norm(x, n, w, 1e-6)) if kind == "rms" else (lambda: F.layer_norm(x, n, w, b, 1e-5))
    if name == "compiled":  # the plain-torch formula, fused by inductor
        ref = torch.compile(kernels.reference_rms_norm if kind == "rms" else kernels.reference_layer_norm, dynamic=False)
        return (lambda: ref(x, w)) if kind == "rms" else (lambda: ref(x, w, b))
    raise ValueError(f"unknown norm implementation {name!r}")


# ---- Measuring ---------------------------------------------------------------------------------


def cuda_timer(rep_ms: int):
    """A timer: median ms of fn over `rep_ms` of repeats (CUDA events). do_bench's first, untimed
    call also compiles whatever the forward call did not (a compiled backward, say)."""
    import triton.testing

    def timer(fn, grad_to_none=None):
        return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, grad_to_none=grad_to_none, return_mode="median")

    return timer


def _describe(err: BaseException) -> str:
    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower():
        return "OOM"
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"[:160]


def _free() -> None:
    """Give cached GPU memory back so one configuration's failure or peak does not leak into the next."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def _time_mode(fn, mode, inputs, dout, timer) -> float:
    if mode == "fwd":
        return timer(fn)
    if mode == "bwd":
        out = fn()
        return timer(lambda: out.backward(dout, retain_graph=True), inputs)
    return timer(lambda: fn().backward(dout), inputs)


def measure(build, inputs, modes, timer) -> dict:
    """{mode: (ms, peak MiB, error)} for the callable made by `build()`; never raises."""
    nan, cuda = float("nan"), torch.cuda.is_available()
    results, failed = {}, False
    try:
        fn = build()
        dout = torch.randn_like(fn())  # compiles the forward; if that fails, every mode fails
    except Exception as err:  # noqa: BLE001 (record and go on)
        results, failed = {m: (nan, nan, _describe(err)) for m in modes}, True
    for mode in modes if not failed else ():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            ms = _time_mode(fn, mode, inputs, dout, timer)
            results[mode] = (ms, torch.cuda.max_memory_allocated() / 2**20 if cuda else nan, "")
        except Exception as err:  # noqa: BLE001
            results[mode], failed = (nan, nan, _describe(err)), True
        for t in inputs:
            t.grad = None
    if failed:  # outside the except blocks: a live traceback would pin the failed graph's memory
        _free()
    return results


def copy_bandwidth(timer, device="cuda", nbytes=2**30) -> float:
    """GB/s of a device-to-device copy: bytes read plus bytes written, over the median time."""
    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    ms = timer(lambda: y.copy_(x))
    return 2 * nbytes / ms / 1e6


def run_attention(args, meta, timer, device="cuda", emit=print) -> list[dict]:
    rows = []
    for dtype, head_dim, variant, seq in itertools.product(args.dtype, args.head_dim, args.variant, args.seq):
        batch = max(1, args.tokens // seq)
        base = dict(meta, kind="attention", variant=variant, dtype=dtype, batch=batch, heads=args.heads, seq=seq,
                    head_dim=head_dim)
        if _past_deadline(args):
            rows += [dict(base, impl=i, mode=m, error="skipped: time limit") for i in args.impl_attention for m in args.mode]
            continue
        mine = _attention_config(args, base, timer, device)
        emit(format_block(f"attention {variant} {dtype} D={head_dim} B={batch} H={args.heads} S={seq}", mine,
                          "tflops", "TFLOP/s"))
        rows += mine
    return rows


def _attention_config(args, base, timer, device) -> list[dict]:
    batch, heads, seq, head_dim, variant = (base[k] for k in ("batch", "heads", "seq", "head_dim", "variant"))
    torch._dynamo.reset()  # one compile per shape, so the recompile limit never silently falls back to eager
    causal, window = _variant_masking(variant, args.window)
    try:
        qkv, ctx = _attention_setup(variant, batch, heads, seq, head_dim, DTYPES[base["dtype"]], device, args.window)
    except Exception as err:  # noqa: BLE001 (the inputs alone may not fit)
        return [dict(base, impl=i, mode=m, error=_describe(err)) for i in args.impl_attention for m in args.mode]
    rows = []
    for impl in args.impl_attention:
        for mode, (ms, peak, err) in measure(lambda: _attention_impl(impl, qkv, ctx, seq), qkv, args.mode, timer).items():
            flops = attention_flops(batch, heads, seq, seq, head_dim, causal, window, mode)
            rows.append(dict(base, impl=impl, mode=mode, ms=ms, tflops=flops / ms / 1e9, peak_mib=peak, error=err))
    del qkv, ctx
    _free()
    return rows


def _past_deadline(args) -> bool:
    """True once --time-limit has run out: the remaining shapes are recorded as skipped, and what was
    measured is still written."""
    return getattr(args, "deadline", None) is not None and time.time() > args.deadline


def run_norms(args, meta, timer, copy_gbps, device="cuda", emit=print) -> list[dict]:
    rows = []
    for dtype, kind, hidden in itertools.product(args.dtype, ("layer", "rms"), args.hidden):
        base = dict(meta, kind="norm", variant=kind, dtype=dtype, rows=args.norm_rows, hidden=hidden)
        if _past_deadline(args):
            rows += [dict(base, impl=i, mode=m, error="skipped: time limit") for i in args.impl_norm for m in args.mode]
            continue
        mine = _norm_config(args, base, timer, copy_gbps, device)
        emit(format_block(f"norm {kind} {dtype} M={args.norm_rows} N={hidden} (copy {copy_gbps:.0f} GB/s)", mine,
                          "gbps", "GB/s"))
        rows += mine
    return rows


def _norm_config(args, base, timer, copy_gbps, device) -> list[dict]:
    m, n, kind, dtype = base["rows"], base["hidden"], base["variant"], DTYPES[base["dtype"]]
    torch._dynamo.reset()
    try:
        x = torch.randn(m, n, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(n, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(n, device=device, dtype=dtype, requires_grad=True) if kind == "layer" else None
    except Exception as err:  # noqa: BLE001
        return [dict(base, impl=i, mode=mo, error=_describe(err)) for i in args.impl_norm for mo in args.mode]
    inputs = [t for t in (x, w, b) if t is not None]
    rows = []
    for impl in args.impl_norm:
        for mode, (ms, peak, err) in measure(lambda: _norm_impl(impl, kind, x, w, b), inputs, args.mode, timer).items():
            gbps = NORM_BYTES[mode] * m * n * x.element_size() / ms / 1e6
            rows.append(dict(base, impl=impl, mode=mode, ms=ms, gbps=gbps, pct_copy=100 * gbps / copy_gbps,
                             peak_mib=peak, error=err))
    del x, w, b, inputs
    _free()
    return rows


# ---- Reporting ---------------------------------------------------------------------------------


def format_block(title: str, rows: list[dict], metric: str, unit: str) -> str:
    """One implementation per line, one column per mode; errors shown in the note column."""
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    lines = [title, "  " + f"{'impl':<16}" + "".join(f"{m + ' ' + unit:>18}" for m in modes) + f"{'peak MiB':>11}  note"]
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = {r["mode"]: r for r in rows if r["impl"] == impl}
        cells, notes = [], []
        for m in modes:
            r = mine.get(m, {})
            value = r.get(metric, float("nan"))
            if r.get("pct_copy") is not None and not math.isnan(value):
                cells.append(f"{value:>10.1f} ({r['pct_copy']:3.0f}%)")
            else:
                cells.append(f"{value:>18.1f}" if not math.isnan(value) else f"{'-':>18}")
            if r.get("error") and r["error"] not in notes:
                notes.append(r["error"])
        peak = max((r.get("peak_mib", float("nan")) for r in mine.values()), default=float("nan"))
        peak_s = f"{peak:>11.0f}" if not math.isnan(peak) else f"{'-':>11}"
        lines.append("  " + f"{impl:<16}" + "".join(f"{c:>18}" for c in cells) + peak_s + "  " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_results(rows: list[dict], meta: dict, out_dir: Path, tag: str = "") -> list[Path]:
    """CSV of all rows, JSON sidecar, and PNG plots; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"kernels-{tag + '-' if tag else ''}{device_slug(meta['device'])}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return [stem.with_suffix(".csv"), stem.with_suffix(".json")] + plot(rows, stem)


def plot(rows: list[dict], stem: Path) -> list[Path]:
    """Per dtype: attention TFLOP/s vs sequence length, norm GB/s vs hidden size; one line per impl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots")
        return []
    ok = [r for r in rows if not r.get("error") and r.get("ms") is not None and not math.isnan(r["ms"])]
    paths = []
    for kind, x_key, y_key, unit in (("attention", "seq", "tflops", "TFLOP/s"), ("norm", "hidden", "gbps", "GB/s")):
        for dtype in sorted({r["dtype"] for r in ok if r["kind"] == kind}):
            mine = [r for r in ok if r["kind"] == kind and r["dtype"] == dtype]
            path = Path(f"{stem}-{kind}-{dtype}.png")
            paths.append(_grid_plot(mine, "variant", x_key, y_key, f"{unit} ({dtype})", path, kind == "attention"))
    plt.close("all")
    return paths


def _grid_plot(rows, row_key, x_key, y_key, ylabel, path, by_head_dim) -> Path:
    """Subplot grid (row_key x mode): one colour per implementation, dashed for the smaller head dim."""
    import matplotlib.pyplot as plt

    groups = sorted({r[row_key] for r in rows})
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    head_dims = sorted({r.get("head_dim") for r in rows}) if by_head_dim else [None]
    fig, axes = plt.subplots(len(groups), len(modes), figsize=(5 * len(modes), 3.2 * len(groups)), squeeze=False)
    for (gi, group), (mi, mode) in ((g, m) for g in enumerate(groups) for m in enumerate(modes)):
        ax = axes[gi][mi]
        for ii, impl in enumerate(impls):
            for hd in head_dims:
                pts = sorted((r[x_key], r[y_key]) for r in rows if r[row_key] == group and r["mode"] == mode
                             and r["impl"] == impl and (hd is None or r.get("head_dim") == hd))
                if pts:
                    style = "--" if hd is not None and hd != head_dims[-1] else "-"
                    ax.plot(*zip(*pts), style, color=f"C{ii % 10}", marker="o", ms=3,
                            label=impl if hd is None else f"{impl} d{hd}")
        ax.set_xscale("log", base=2)
        ax.set(title=f"{group} {mode}", xlabel=x_key, ylabel=ylabel)
        ax.grid(alpha=0.3)
    legend = {}  # every implementation, even one that failed in the first panel
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ---- Command line ------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark the Triton attention and norm kernels against torch.")
    p.add_argument("--what", choices=["attention", "norms", "all"], default="all")
    p.add_argument("--quick", action="store_true", help="a short run: few shapes, bf16, D=64, short repeats")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=None)
    p.add_argument("--seq", nargs="+", type=int, default=None, help="attention sequence lengths")
    p.add_argument("--head-dim", nargs="+", type=int, default=None)
    p.add_argument("--variant", nargs="+", choices=VARIANTS, default=None)
    p.add_argument("--impl", nargs="+", default=None, help=f"subset of {ATTN_IMPLS}")
    p.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--tokens", type=int, default=16384, help="batch x sequence, kept constant across lengths")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--window", type=int, default=256, help="sliding-window size of the 'window' variant")
    p.add_argument("--hidden", nargs="+", type=int, default=None, help="norm hidden sizes")
    p.add_argument("--norm-rows", type=int, default=16384)
    p.add_argument("--rep", type=int, default=None, help="ms of timed repeats per measurement")
    p.add_argument("--out", type=Path, default=_HERE / "results")
    p.add_argument("--tag", default="", help="results go to kernels-<tag>-<device>.* (e.g. gpu-check)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds; shapes not started by then are recorded as skipped, and results still written")
    args = p.parse_args(argv)
    args.deadline = None if args.time_limit is None else time.time() + args.time_limit
    q = args.quick
    args.dtype = args.dtype or (["bf16"] if q else ["bf16", "fp16"])
    args.seq = args.seq or ([1024, 4096] if q else [512, 1024, 2048, 4096, 8192, 16384])
    args.head_dim = args.head_dim or ([64] if q else [64, 128])
    args.variant = args.variant or (["causal", "t5"] if q else list(VARIANTS))
    args.hidden = args.hidden or ([1024, 4096, 16384] if q else [768, 1024, 2048, 4096, 8192, 16384, 65536])
    args.rep = args.rep or (30 if q else 100)
    unknown = set(args.impl or ()) - set(ATTN_IMPLS) - set(NORM_IMPLS)
    if unknown:
        p.error(f"unknown --impl {sorted(unknown)}; choose from {list(ATTN_IMPLS)}")
    args.impl_attention = [i for i in ATTN_IMPLS if args.impl is None or i in args.impl]
    args.impl_norm = [i for i in NORM_IMPLS if args.impl is None or i in args.impl]
    return args


def environment(device_name: str) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    return dict(device=device_name, torch=torch.__version__, triton=triton_version,
                date=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE)
        return 0
    meta = environment(torch.cuda.get_device_name())
    timer = cuda_timer(args.rep)
    start = time.time()
    copy_gbps = copy_bandwidth(timer)
    print(f"{meta['device']}  torch {meta['torch']}  triton {meta['triton']}  copy {copy_gbps:.0f} GB/s\n")
    rows = []
    if args.what in ("attention", "all"):
        rows += run_attention(args, meta, timer)
    if args.what in ("norms", "all"):
        rows += run_norms(args, meta, timer, copy_gbps)
    sidecar = dict(meta, cuda=torch.version.cuda, copy_gbps=copy_gbps, dtypes=args.dtype, seqs=args.seq,
                   head_dims=args.head_dim, variants=args.variant, tokens=args.tokens, heads=args.heads,
                   window=args.window, hidden=args.hidden, norm_rows=args.norm_rows, modes=args.mode,
                   rep_ms=args.rep, argv=list(sys.argv[1:] if argv is None else argv),
                   seconds=round(time.time() - start, 1))
    for path in write_results(rows, sidecar, args.out, args.tag):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
