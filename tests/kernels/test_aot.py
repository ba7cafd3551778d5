"""The kernels compiled ahead of time for sm_80 and sm_90 (no GPU needed), and the compiler-fact pruning.

`benchmarks/aot_check.py --suite` compiles a representative subset of what the launchers may pick
(attention forward/preprocess/dK-dV/dQ with T5 + padding at D=128 on sm_90, ALiBi, GQA and sliding
window at D=128/64/80 on sm_80/sm_90, document masking at D=64 on sm_90, both dtypes; LayerNorm and the looped RMSNorm) through the
ptxas in the Triton wheel. It runs once per session in a subprocess, because compiling needs
TRITON_INTERPRET unset, and Triton's disk cache makes a repeated run take seconds.
`make aot-check` runs the full sweep.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kernels._compile import Facts, keep_fitting

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("aot")


@pytest.fixture(scope="module")
def aot():
    spec = importlib.util.spec_from_file_location("aot_check", ROOT / "benchmarks" / "aot_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said explicitly (silences 3.9's warning)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aot_check.py"), "--suite", "--jobs", "2",
                           "--no-write", "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())["rows"], proc


def test_suite_compiles_fits_and_does_not_spill(suite_rows):
    rows, proc = suite_rows
    failed = [f"{r['kernel']} {r['features']} {r['head_dim']} {r['dtype']} {r['target']} {r['config']}: "
              f"{r['status']} {r['error']}" for r in rows if not r["status"].startswith(("ok", "pruned"))]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stdout[-2000:]
    for r in rows:
        if r["role"] == "fixed" and r["config_index"] == 0:  # what small problems launch
            assert r["registers"] > 0 and r["spills"] == 0 and 0 < r["shared_bytes"] <= r["smem_limit"], r


def test_suite_covers_every_kernel_target_dtype_and_head_dim(suite_rows):
    rows, _ = suite_rows
    kernels = {r["kernel"] for r in rows}
    assert {"attention:fwd", "attention:preprocess", "attention:dkdv", "attention:dq"} <= kernels
    assert {"layer_norm:fwd", "layer_norm:bwd", "rms_norm:fwd_looped", "rms_norm:bwd_row_sums", "rms_norm:bwd"} <= kernels
    assert {r["target"] for r in rows} == {"sm_80", "sm_90"}
    assert {r["dtype"] for r in rows} == {"bf16", "fp16"}
    assert {r["head_dim"] for r in rows if r["kernel"].startswith("attention")} == {64, 80, 128}
    assert {"t5-encoder", "alibi", "gqa", "window", "documents"} <= {r["features"] for r in rows}
    assert any(r["role"] == "tuned" for r in rows)


def test_feature_sets_reach_the_kernels(aot):
    # recorded on meta tensors: the flags each feature set sets are the ones the kernels receive
    flags = ("CAUSAL", "HAS_WINDOW", "HAS_KPM", "HAS_ALIBI", "HAS_T5", "HAS_SEG")
    expected = {"plain": (), "causal": ("CAUSAL",), "gqa": ("CAUSAL",), "padding": ("HAS_KPM",),
                "window": ("CAUSAL", "HAS_WINDOW"), "alibi": ("CAUSAL", "HAS_ALIBI"),
                "t5-encoder": ("HAS_T5", "HAS_KPM"), "t5-decoder": ("CAUSAL", "HAS_T5"),
                "documents": ("CAUSAL", "HAS_SEG")}
    assert set(expected) <= set(aot.FEATURE_SETS)
    for name, on in expected.items():
        launches = aot.attention_launches(name, 80, "fp16")
        assert [launch.name for launch in launches] == ["fwd", "preprocess", "dkdv", "dq"]
        for launch in (launches[0], launches[2], launches[3]):
            assert {f for f in flags if launch.args[f]} == set(on), (name, launch.name)
            assert launch.args["GROUP"] == (4 if name == "gqa" else 1)
            assert launch.args["HEAD_DIM"] == 80 and launch.args["D_PAD"] == 128
            assert launch.args["Q"].dtype == torch.float16
        assert len(launches[0].configs) >= 2  # fixed configs, then autotune candidates


def test_norm_launches_follow_the_hidden_size(aot):
    fused = aot.norm_launches("layer", 1024, "bf16")
    assert [launch.name for launch in fused] == ["fwd", "bwd", "sum_partials", "sum_partials"]
    looped = aot.norm_launches("rms", 65536, "bf16")
    assert [launch.name for launch in looped] == ["fwd_looped", "bwd_row_sums", "bwd", "sum_partials"]


def _row(role="tuned", index=1, spills=0, shared=1000, error="", unchecked=False, launch=0):
    return dict(kernel="attention:fwd", features="x", head_dim=64, dtype="bf16", target="sm_90", role=role,
                config_index=index, config=f"c{index}", registers=100, spills=spills, shared_bytes=shared,
                smem_limit=2000, error=error, unchecked=unchecked, launch=launch)


def test_judge_marks_what_the_launcher_would_drop_and_what_fails(aot):
    rows = aot.judge([_row("fixed", 0), _row("fixed", 1, spills=4), _row("tuned", 2, shared=3000), _row("tuned", 3)])
    assert [r["status"] for r in rows] == ["ok", "pruned: spills 4", "pruned: shared memory 3000 > 2000", "ok"]
    rows = aot.judge([_row("fixed", 0, spills=2), _row("tuned", 1, spills=1), _row("tuned", 2, error="boom")])
    assert rows[0]["status"].startswith("FAIL: preferred fixed config spills")
    assert rows[1]["status"].startswith("FAIL: no autotune candidate left")
    assert rows[2]["status"] == "FAIL: does not compile"
    rows = aot.judge([_row("fixed", 0, spills=2, unchecked=True)])
    assert rows[0]["status"].startswith("unchecked: preferred fixed config")


def test_results_files_and_summary(aot, tmp_path):
    rows = aot.judge([_row("fixed", 0), _row("tuned", 1, spills=3), _row("tuned", 2)])
    meta = dict(date="2025-01-01T00:00:00+00:00", torch="t", triton="3.x", device="none", seconds=1.0)
    csv_path, md_path = aot.write_results(rows, meta, tmp_path)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[:10] == ["kernel", "features", "head_dim", "dtype", "target", "role", "config", "registers",
                           "spills", "shared_bytes"]
    assert len(csv_path.read_text().splitlines()) == 4
    md = md_path.read_text()
    assert "| attention:fwd | sm_90 | 3 | 2 | 1 | 0 | 0 | 100–100 | 1–1 |" in md and "Failures: 0" in md
    assert "| attention:fwd | sm_90 | 64 | c0 | 100–100 | 0 | 1–1 |" in md  # the preferred fixed config's line


def test_keep_fitting_uses_the_compiler_facts():
    facts = {"a": Facts(255, 6, 1000), "b": Facts(128, 0, 5000), "c": Facts(200, 0, 1000), "d": Facts(0, 0, 0, "err")}
    assert keep_fitting(list("abcd"), facts.get, smem_limit=4096) == ["c"]
    assert keep_fitting(list("abcd"), facts.get, smem_limit=8192) == ["b", "c"]
    with pytest.warns(UserWarning, match="no launch config"):  # nothing clean: the fewest spills that fits
        assert keep_fitting(["a", "d"], facts.get, smem_limit=4096) == ["a"]


def test_autotune_pruner_keeps_the_clean_candidates_meant_for_the_head_dim(monkeypatch):
    attn = sys.modules["kernels.attention"]
    configs = attn._TUNED["fwd"].configs
    spilling = configs[0]
    monkeypatch.setattr(attn, "runtime_facts", lambda kernel, args, c: Facts(200, 8 if c is spilling else 0, 4096))
    monkeypatch.setattr(attn, "device_smem_limit", lambda: 100_000)
    kept = attn._pruner("fwd")(configs, {}, D_PAD=128)
    assert kept == [c for c in attn.tuned_configs("fwd", 128) if c is not spilling] and kept
    monkeypatch.setattr(attn, "device_smem_limit", lambda: 1024)  # a device with too little shared memory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(attn._pruner("fwd")(configs, {}, D_PAD=64)) == 1


def test_relative_position_bucket_has_one_implementation():
    import kernels
    import zoo.blocks
    import zoo.blocks.positions
    from kernels.t5_buckets import relative_position_bucket

    assert zoo.blocks.relative_position_bucket is relative_position_bucket
    assert zoo.blocks.positions.relative_position_bucket is relative_position_bucket
    assert kernels.relative_position_bucket is relative_position_bucket
    assert sys.modules["kernels.attention"].relative_position_bucket is relative_position_bucket


@pytest.mark.gpu
def test_runtime_facts_agree_with_the_ahead_of_time_compile(aot):
    # on the device, the driver's registers and spills for a config equal what ptxas reported ahead of time
    from kernels._compile import aot_facts, runtime_facts

    major, minor = torch.cuda.get_device_capability()
    launch = aot.attention_launches("t5-encoder", 128, "bf16")[0]
    args = {k: torch.empty_like(v, device="cuda") if isinstance(v, torch.Tensor) else v for k, v in launch.args.items()}
    config = launch.configs[0]
    on_device, ahead = runtime_facts(launch.kernel, args, config), aot_facts(launch.kernel, args, config, major * 10 + minor)
    assert (on_device.regs, on_device.spills) == (ahead.regs, ahead.spills)


def test_fixed_config_is_the_first_that_compiles_clean_and_is_remembered(aot, monkeypatch):
    attn = sys.modules["kernels.attention"]
    args = aot.attention_launches("causal", 64, "fp16")[0].args
    preferred, fallback = attn.fixed_configs("fwd", 64)[:2]
    calls = []

    def facts(kernel, args, config):
        calls.append(config)
        return Facts(255, 16 if config is preferred else 0, 4096)

    monkeypatch.setattr(attn, "runtime_facts", facts)
    monkeypatch.setattr(attn, "device_smem_limit", lambda: 100_000)
    monkeypatch.setattr(attn.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(attn, "_FIXED_CHOICE", {})
    monkeypatch.setattr(attn, "fixed_configs", lambda kind, d: [preferred, fallback])
    assert attn._fixed_choice("fwd", args) is fallback
    n = len(calls)
    assert attn._fixed_choice("fwd", args) is fallback and len(calls) == n  # chosen once per kernel variant
