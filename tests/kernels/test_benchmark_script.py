"""benchmarks/kernel_bench.py without a GPU: the no-GPU exit, the FLOP accounting, and the reporting
path (tables, CSV, JSON, PNG) driven on CPU with a wall-clock timer and tiny shapes."""

from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    # load by path: `benchmarks` is not an installed package, and the file is named like `kernels`
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "kernel_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_timer(fn, grad_to_none=None):
    for t in grad_to_none or ():
        t.grad = None
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_main_without_cuda_says_so_and_exits_zero(bench, capsys):
    assert bench.main([]) == 0
    assert "no CUDA device: kernel benchmarks need a GPU" in capsys.readouterr().out


@pytest.mark.parametrize("sq,sk", [(7, 7), (5, 9), (9, 5), (1, 6)])
@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 2), (False, 3), (True, 0)])
def test_unmasked_pairs_matches_brute_force(bench, sq, sk, causal, window):
    expected = 0
    for i in range(sq):
        pos = i + sk - sq  # bottom-right alignment, as in zoo.blocks.attention
        for j in range(sk):
            expected += (not causal or j <= pos) and (window is None or abs(pos - j) <= window)
    assert bench.unmasked_pairs(sq, sk, causal, window) == expected


def test_attention_flops_scale_with_mode(bench):
    fwd = bench.attention_flops(2, 3, 8, 8, 16, causal=True)
    assert fwd == 4 * 2 * 3 * 16 * (8 * 9 // 2)
    assert bench.attention_flops(2, 3, 8, 8, 16, causal=True, mode="bwd") == 2.5 * fwd
    assert bench.attention_flops(2, 3, 8, 8, 16, causal=True, mode="fwd+bwd") == 3.5 * fwd


@pytest.mark.parametrize("variant", ["causal", "full", "window", "alibi", "t5"])
def test_every_implementation_computes_the_same_variant(bench, variant):
    # the benchmark compares like with like: same masks, same biases, same alignment for all
    (q, k, v), ctx = bench._attention_setup(variant, 1, 2, 16, 8, torch.float32, "cpu", window=3)
    eager = bench._attention_impl("eager", (q, k, v), ctx, 16)()
    for impl in ("ours", "sdpa-math"):
        torch.testing.assert_close(bench._attention_impl(impl, (q, k, v), ctx, 16)(), eager, atol=1e-5, rtol=1e-5)
    # FlexAttention's compiled backward does not run on CPU: evaluate its mods on the dense scores
    score_mod, mask_mod = bench._flex_mods(ctx, 16)
    i, j = torch.arange(16)[:, None], torch.arange(16)[None, :]
    scores = q[0, 1] @ k[0, 1].T * ctx["scale"]
    if score_mod is not None:
        scores = score_mod(scores, 0, 1, i, j)
    if mask_mod is not None:
        scores = scores.masked_fill(~mask_mod(0, 1, i, j), float("-inf"))
    torch.testing.assert_close(torch.softmax(scores, -1) @ v[0, 1], eager[0, 1], atol=1e-5, rtol=1e-5)


def test_cpu_pipeline_records_errors_and_writes_results(bench, tmp_path):
    args = bench.parse_args(["--seq", "32", "64", "--head-dim", "16", "--dtype", "fp16", "--tokens", "64",
                             "--heads", "2", "--variant", "causal", "alibi", "--impl", "eager", "sdpa-cudnn",
                             "sdpa-math", "--hidden", "24", "40", "--norm-rows", "8", "--out", str(tmp_path)])
    meta = bench.environment("Fake GPU 80GB (test)")
    lines = []
    rows = bench.run_attention(args, meta, _cpu_timer, device="cpu", emit=lines.append)
    args.impl_norm = ["eager"]
    rows += bench.run_norms(args, meta, _cpu_timer, copy_gbps=10.0, device="cpu", emit=lines.append)
    assert len(rows) == 2 * 2 * 3 * 3 + 2 * 2 * 3  # attention: seq x variant x impl x mode; norms: kind x hidden x mode
    eager = [r for r in rows if r["impl"] == "eager" and r["kind"] == "attention"]
    assert all(not r["error"] and r["tflops"] > 0 for r in eager)
    assert all(r["error"] for r in rows if r["impl"] == "sdpa-cudnn")  # no cuDNN on CPU: recorded, not raised
    assert all(r["pct_copy"] > 0 for r in rows if r["kind"] == "norm")
    assert "attention alibi fp16 D=16 B=1 H=2 S=64" in "".join(lines)

    paths = bench.write_results(rows, dict(meta, dtypes=args.dtype), tmp_path)
    names = {p.name for p in paths}
    assert {"kernels-fake-gpu-80gb-test.csv", "kernels-fake-gpu-80gb-test.json"} <= names
    assert any(n.endswith(".png") for n in names) and all(p.exists() for p in paths)
    with open(tmp_path / "kernels-fake-gpu-80gb-test.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and {"device", "dtype", "torch", "triton", "date", "seq"} <= set(written[0])
    assert json.loads((tmp_path / "kernels-fake-gpu-80gb-test.json").read_text())["device"] == meta["device"]


def test_time_limit_skips_the_rest_and_keeps_what_was_measured(bench, tmp_path):
    args = bench.parse_args(["--seq", "16", "32", "--head-dim", "16", "--dtype", "fp16", "--tokens", "32",
                             "--heads", "2", "--variant", "causal", "--impl", "eager", "--mode", "fwd",
                             "--time-limit", "1000"])
    meta = bench.environment("cpu (test)")
    first = bench.run_attention(args, meta, _cpu_timer, device="cpu", emit=lambda _: None)
    assert [r["error"] for r in first] == ["", ""]
    args.deadline = time.time() - 1  # the limit has run out
    late = bench.run_attention(args, meta, _cpu_timer, device="cpu", emit=lambda _: None)
    assert [r["error"] for r in late] == ["skipped: time limit"] * 2 and {r["seq"] for r in late} == {16, 32}
