"""Ahead-of-time compile check of the Triton kernels for sm_80 (A100) and sm_90 (H100), no GPU needed.

For each kernel (attention forward, backward preprocessing, dK/dV, dQ; LayerNorm/RMSNorm forward,
backward and their reductions), the launchers are run on `meta` tensors with their launches
recorded (`kernels._compile.recorded_launches`), so what is compiled is exactly what they pass.
Every config they may pick is compiled: the small-problem fixed configs and every autotune
candidate meant for the head dim, through the ptxas inside the Triton wheel, and the compiler's
registers, spills and shared memory are tabulated against the device's shared memory
(`kernels._compile.SMEM_LIMIT`).

A launch fails the check when a config does not compile, when its preferred fixed config spills or
overflows shared memory, or when no autotune candidate is left after pruning. Candidates that
spill or overflow are marked `pruned`: the autotuner drops them on the device by the same rule.
The feature set `all` (every option at once, which no model uses) is tabulated but not asserted.

    python benchmarks/aot_check.py                 # the full sweep (make aot-check)
    python benchmarks/aot_check.py --suite --json out.json   # the in-suite subset (tests/kernels)

Writes benchmarks/results/aot-check.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# run as a script from anywhere: the checkout (zoo, kernels) first on sys.path, benchmarks/ off it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402


def _mask(B, H, Hkv, S):
    return torch.ones(B, S, dtype=torch.bool, device="meta")


def _slopes(B, H, Hkv, S):
    return torch.ones(H, device="meta")


def _t5(B, H, Hkv, S):
    return torch.ones(H, 32, device="meta")


def _segments(B, H, Hkv, S):
    return torch.zeros(B, S, dtype=torch.long, device="meta")


# The attention feature sets models use: name -> `attention()` options (a callable builds the tensor
# from B, H, Hkv, S). `kv_heads` sets the key/value heads (GQA). Adding a feature is one entry.
FEATURE_SETS = {
    "plain": {},
    "causal": dict(causal=True),
    "gqa": dict(causal=True, kv_heads=2),
    "padding": dict(key_padding_mask=_mask),
    "window": dict(causal=True, window=256),
    "alibi": dict(causal=True, alibi_slopes=_slopes),
    "t5-encoder": dict(t5_bias=_t5, key_padding_mask=_mask),
    "t5-decoder": dict(causal=True, t5_bias=_t5),
    "documents": dict(causal=True, segment_ids=_segments),  # packed examples (instruction tuning)
}
UNCHECKED = {"all": dict(causal=True, kv_heads=2, window=256, key_padding_mask=_mask, alibi_slopes=_slopes,
                         t5_bias=_t5, segment_ids=_segments)}
HEAD_DIMS = (64, 80, 128)
HIDDEN = (768, 1024, 2048, 4096, 8192, 16384, 65536)  # the norm launcher's configs change with N
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
ARCHS = (80, 90)
HEADS, BATCH, SEQ, NORM_ROWS = 8, 2, 1024, 4096

# The in-suite subset: (family, features or norm kind, head dim or hidden, dtype, arch, configs), with
# configs "all" (every fixed and tuned one), "first" (each launch's preferred fixed config only) or
# "edges" (the preferred fixed config and the first, largest autotune candidate).
SUITE = [
    ("attention", "t5-encoder", 128, "bf16", 90, "edges"),
    ("attention", "alibi", 128, "bf16", 80, "first"),
    ("attention", "gqa", 64, "fp16", 80, "first"),
    ("attention", "window", 80, "bf16", 90, "first"),
    ("attention", "documents", 64, "bf16", 90, "first"),
    ("norm", "layer", 16384, "bf16", 90, "all"),
    ("norm", "rms", 65536, "fp16", 80, "all"),
]
FIELDS = ["kernel", "features", "head_dim", "dtype", "target", "role", "config", "registers", "spills",
          "shared_bytes", "smem_limit", "status", "error"]


# ---- What the launchers launch --------------------------------------------------------------------


def attention_launches(features: str, head_dim: int, dtype: str) -> list:
    """The launches of one forward and backward of `kernels.attention` with these options."""
    from kernels._compile import recorded_launches

    attn = importlib.import_module("kernels.attention")  # `kernels.attention` as an attribute is the function
    opts = dict({**FEATURE_SETS, **UNCHECKED}[features])
    hkv = opts.pop("kv_heads", HEADS)
    opts = {k: v(BATCH, HEADS, hkv, SEQ) if callable(v) else v for k, v in opts.items()}
    t = DTYPES[dtype]
    q, do = (torch.empty(BATCH, HEADS, SEQ, head_dim, dtype=t, device="meta") for _ in range(2))
    k, v = (torch.empty(BATCH, hkv, SEQ, head_dim, dtype=t, device="meta") for _ in range(2))
    spec = attn._make_spec(q, opts.pop("causal", False), None, opts.pop("window", None),
                           opts.pop("key_padding_mask", None), opts.pop("alibi_slopes", None),
                           opts.pop("t5_bias", None), segment_ids=opts.pop("segment_ids", None))
    assert not opts, f"feature options not passed to the kernels: {sorted(opts)}"
    with recorded_launches() as launches:
        o, lse = attn._forward(q, k, v, spec)
        attn._backward(do, q, k, v, o, lse, spec)
    return launches


def norm_launches(kind: str, hidden: int, dtype: str) -> list:
    """The launches of one forward and backward of `layer_norm` (kind 'layer') or `rms_norm` ('rms')."""
    from kernels import layernorm
    from kernels._compile import recorded_launches

    t = DTYPES[dtype]
    x, dy = (torch.empty(NORM_ROWS, hidden, dtype=t, device="meta") for _ in range(2))
    w = torch.empty(hidden, dtype=t, device="meta")
    b = torch.empty(hidden, dtype=t, device="meta") if kind == "layer" else None
    with recorded_launches() as launches:
        _, mean, rstd = layernorm._forward(x, w, b, 1e-5, kind == "rms")
        layernorm._backward(dy, x, w, b, mean, rstd, kind == "rms")
    return launches


def _launches(family, features, size, dtype):
    return (attention_launches if family == "attention" else norm_launches)(features, size, dtype)


def units(suite: bool) -> list[tuple]:
    """Work units (family, features, size, dtype, arch, which configs)."""
    if suite:
        return list(SUITE)
    # norms first (few), then attention by dtype: a time-limited run covers every feature set in bf16 first
    out = [("norm", k, n, dt, a, "all") for dt in DTYPES for k in ("layer", "rms") for n in HIDDEN for a in ARCHS]
    return out + [("attention", f, d, dt, a, "all") for dt in DTYPES for f in [*FEATURE_SETS, *UNCHECKED]
                  for d in HEAD_DIMS for a in ARCHS]


def tasks_of(unit) -> list[tuple]:
    """(unit, launch index, config index, role) for the configs of every launch of a unit to compile.

    A launch's fixed configs after the first are fallbacks, picked only on a device where the first
    does not fit (less shared memory than sm_80/sm_90): the sweep compiles the first only.
    """
    family, features, size, dtype, arch, which = unit
    tasks = []
    for li, launch in enumerate(_launches_cached(unit)):
        n_fixed = _n_fixed(family, launch)
        chosen = {"all": [0, *range(n_fixed, len(launch.configs))], "first": [0], "edges": sorted({0, n_fixed})}[which]
        for ci in (c for c in chosen if c < len(launch.configs)):
            tasks.append((unit, li, ci, "fixed" if ci < n_fixed else "tuned"))
    return tasks


def _n_fixed(family, launch) -> int:
    if family != "attention" or launch.name == "preprocess":
        return len(launch.configs)
    attn = importlib.import_module("kernels.attention")
    return len(attn.fixed_configs(launch.name, launch.args["D_PAD"]))


# ---- Compiling ----------------------------------------------------------------------------------


_CACHE: dict = {}


def _launches_cached(unit):
    if unit[:4] not in _CACHE:
        _CACHE[unit[:4]] = _launches(*unit[:4])
    return _CACHE[unit[:4]]


def _compile_key(task) -> tuple:
    """Tasks with equal keys compile to the same binary (e.g. the preprocess of every feature set)."""
    from kernels._compile import _specialization_key, config_name

    unit, li, ci, _ = task
    launch = _launches_cached(unit)[li]
    spec = _specialization_key(launch.kernel, launch.args)
    return launch.kernel.fn.__name__, unit[4], spec, config_name(launch.configs[ci])


def compile_task(task) -> dict:
    """Compile one config of one launch for its target: registers, spills, shared bytes, error."""
    from kernels._compile import aot_facts

    unit, li, ci, _ = task
    launch = _launches_cached(unit)[li]
    facts = aot_facts(launch.kernel, launch.args, launch.configs[ci], unit[4])
    return dict(registers=facts.regs, spills=facts.spills, shared_bytes=facts.shared, error=facts.error)


def _row(task, facts: dict) -> dict:
    from kernels._compile import SMEM_LIMIT, config_name

    unit, li, ci, role = task
    family, features, size, dtype, arch, _ = unit
    launch = _launches_cached(unit)[li]
    name = f"{family}:{launch.name}" if family == "attention" else f"{features}_norm:{launch.name}"
    return dict(kernel=name, features=features if family == "attention" else "-", head_dim=size, dtype=dtype,
                target=f"sm_{arch}", role=role, config=config_name(launch.configs[ci]), **facts,
                smem_limit=SMEM_LIMIT[arch], launch=li, config_index=ci, unchecked=features in UNCHECKED)


def judge(rows: list[dict]) -> list[dict]:
    """Fill in each row's status: ok, pruned (the launcher drops it on the device), or FAIL."""
    groups: dict = {}
    for r in rows:
        key = tuple(r[k] for k in ("kernel", "features", "head_dim", "dtype", "target", "launch"))
        groups.setdefault(key, []).append(r)
    for group in groups.values():
        tuned = [r for r in group if r["role"] == "tuned"]
        any_tuned_ok = any(not _problem(r) for r in tuned)
        for r in group:
            problem = _problem(r)
            if not problem:
                r["status"] = "ok"
            elif r["error"].startswith("not compiled"):
                r["status"] = "not compiled (time limit)"
            elif r["error"]:
                r["status"] = "FAIL: does not compile"
            elif r["role"] == "fixed" and r["config_index"] == 0:
                r["status"] = f"FAIL: preferred fixed config {problem}"
            elif r["role"] == "tuned" and not any_tuned_ok:
                r["status"] = f"FAIL: no autotune candidate left ({problem})"
            else:
                r["status"] = f"pruned: {problem}"
            if r["unchecked"] and r["status"].startswith("FAIL") and not r["error"]:
                r["status"] = "unchecked: " + r["status"][6:]
    return rows


def _problem(r) -> str:
    from kernels._compile import Facts

    return Facts(r["registers"], r["spills"], r["shared_bytes"], r["error"]).problem(r["smem_limit"])


def run(suite: bool, jobs: int, time_limit: float | None = None) -> list[dict]:
    """Compile every distinct binary once (in `jobs` processes) and judge the rows. Past `time_limit`
    seconds the rest is left out (status 'not compiled'); Triton's disk cache keeps what was done."""
    tasks = [t for u in units(suite) for t in tasks_of(u)]
    unique = list({_compile_key(t): t for t in reversed(tasks)}.items())[::-1]
    deadline = time.time() + time_limit if time_limit else float("inf")
    facts = {}
    if jobs <= 1:
        for key, t in unique:
            if time.time() < deadline:
                facts[key] = compile_task(t)
    else:
        import multiprocessing

        # fork: the workers inherit the imported modules (nothing here has touched a GPU)
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        pool = ProcessPoolExecutor(jobs, mp_context=context)
        futures = [(key, pool.submit(compile_task, t)) for key, t in unique]
        for key, future in futures:
            try:
                facts[key] = future.result(timeout=None if not time_limit else max(0.0, deadline - time.time()))
            except TimeoutError:
                break
        pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.kill()  # a compile still running past the limit
    missing = dict(registers=0, spills=0, shared_bytes=0, error="not compiled: time limit")
    return judge([_row(t, facts.get(_compile_key(t), missing)) for t in tasks])


# ---- Reporting ----------------------------------------------------------------------------------


def summary(rows: list[dict]) -> str:
    """Per kernel and target: configs compiled, failures, pruned, and the range of registers and shared
    memory of the configs the launchers may pick (status ok), as a markdown table."""
    lines = ["| kernel | target | configs | ok | pruned | FAIL | not compiled | registers (ok) | shared KiB (ok) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    keys = dict.fromkeys((r["kernel"], r["target"]) for r in rows)
    for kernel, target in keys:
        mine = [r for r in rows if r["kernel"] == kernel and r["target"] == target]
        ok = [r for r in mine if r["status"] == "ok"]
        regs = f"{min(r['registers'] for r in ok)}–{max(r['registers'] for r in ok)}" if ok else "-"
        kib = [r["shared_bytes"] / 1024 for r in ok]
        smem = f"{min(kib):.0f}–{max(kib):.0f}" if ok else "-"
        lines.append(f"| {kernel} | {target} | {len(mine)} | {len(ok)} | "
                     f"{sum(r['status'].startswith(('pruned', 'unchecked')) for r in mine)} | "
                     f"{sum(r['status'].startswith('FAIL') for r in mine)} | "
                     f"{sum(r['status'].startswith('not compiled') for r in mine)} | {regs} | {smem} |")
    return "\n".join(lines) + "\n"


def fixed_summary(rows: list[dict]) -> str:
    """The configs small problems launch (each attention launch's preferred fixed config): per kernel,
    target and head dim, its registers and shared memory over the checked feature sets and dtypes."""
    lines = ["| kernel | target | head dim | config | registers | spills | shared KiB |",
             "| --- | --- | ---: | --- | --- | ---: | --- |"]
    chosen = [r for r in rows if r["kernel"].startswith("attention") and r["role"] == "fixed"
              and r["config_index"] == 0 and not r["unchecked"] and not r["status"].startswith("not compiled")]
    for key in dict.fromkeys((r["kernel"], r["target"], r["head_dim"], r["config"]) for r in chosen):
        mine = [r for r in chosen if (r["kernel"], r["target"], r["head_dim"], r["config"]) == key]
        regs = sorted(r["registers"] for r in mine)
        kib = sorted(r["shared_bytes"] / 1024 for r in mine)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {regs[0]}–{regs[-1]} | "
                     f"{max(r['spills'] for r in mine)} | {kib[0]:.0f}–{kib[-1]:.0f} |")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import triton

    return dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), torch=torch.__version__,
                triton=triton.__version__, device="none (ahead-of-time compile, ptxas from the triton wheel)")


def write_results(rows: list[dict], meta: dict, out_dir: Path, stem: str = "aot-check") -> list[Path]:
    """The full table as CSV, and a markdown file with the environment, the summary and the failures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    bad = [r for r in rows if r["status"].startswith("FAIL")]
    pending = sum(r["status"].startswith("not compiled") for r in rows)
    md = [f"# Ahead-of-time compile check ({meta['date']})", "",
          f"triton {meta['triton']}, torch {meta['torch']}; device: {meta['device']}; {len(rows)} configs "
          f"({len(rows) - pending} compiled, {pending} left out by the time limit) in {meta.get('seconds', '?')} s. "
          "Shared memory limits: sm_80 163 KiB, sm_90 227 KiB (opt-in per block). "
          f"Attention shapes: B={BATCH}, H={HEADS}, S={SEQ}; norms: M={NORM_ROWS}. Full table: {csv_path.name}.", "",
          summary(rows), "Preferred fixed configs (what small problems launch), over the checked feature sets:", "",
          fixed_summary(rows), f"Failures: {len(bad)}", ""]
    md += [f"- {r['kernel']} {r['features']} D/N={r['head_dim']} {r['dtype']} {r['target']} {r['config']}: "
           f"{r['status']} {r['error']}" for r in bad]
    md_path.write_text("\n".join(md) + "\n")
    return [csv_path, md_path]


def parse_args(argv):
    p = argparse.ArgumentParser(description="Compile the Triton kernels for sm_80/sm_90 ahead of time and "
                                            "tabulate registers, spills and shared memory.")
    p.add_argument("--suite", action="store_true", help="the small in-suite subset instead of the full sweep")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--out", type=Path, default=_HERE / "results", help="folder for aot-check.{csv,md}")
    p.add_argument("--no-write", action="store_true", help="write no CSV/markdown (the tests use --json)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop compiling after this many seconds and tabulate what was compiled (a rerun resumes)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("aot_check compiles real kernels: unset TRITON_INTERPRET")
        return 2
    start = time.time()
    rows = run(args.suite, args.jobs, args.time_limit)
    meta = dict(environment(), seconds=round(time.time() - start, 1))
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
    if not args.no_write:
        for path in write_results(rows, meta, args.out):
            print(f"wrote {path}")
    print(summary(rows))
    failed = [r for r in rows if r["status"].startswith("FAIL")]
    for r in failed:
        print(f"FAIL {r['kernel']} {r['features']} {r['head_dim']} {r['dtype']} {r['target']} {r['config']}: "
              f"{r['status']} {r['error']}")
    pending = sum(r["status"].startswith("not compiled") for r in rows)
    print(f"{len(rows)} configs, {pending} not compiled (time limit), {len(failed)} failures, {meta['seconds']} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
