"""benchmarks/gpu_check.py without a GPU: the no-GPU exit, argument handling, the plan, running steps
under their time limits (with stand-in commands), skipping for missing packages, and the results."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_zero(gc, capsys, tmp_path):
    assert gc.main(["--out", str(tmp_path)], cuda_available=False) == 0
    assert capsys.readouterr().out.strip() == gc.NO_GPU_MESSAGE
    assert not list(tmp_path.iterdir())  # nothing written


def test_arguments(gc):
    args = gc.parse_args([])
    assert args.budget == 480 and list(args.only) == ["tests", "bench", "fit"]
    assert gc.parse_args(["--only", "fit", "--budget", "120"]).only == ["fit"]
    with pytest.raises(SystemExit):
        gc.parse_args(["--budget", "10"])
    with pytest.raises(SystemExit):
        gc.parse_args(["--only", "everything"])


def test_plan_covers_the_issue_and_fits_the_budget(gc):
    steps = gc.plan(gc.parse_args([]))
    names = [s.name for s in steps]
    assert names[0] == "pytest -m gpu" and "-m" in steps[0].cmd and "gpu" in steps[0].cmd
    causal = next(s for s in steps if s.name == "attention causal").cmd
    for flag in ("2048", "8192", "64", "128", "bf16", "fwd", "bwd", "flex", "sdpa-flash", "sdpa-efficient",
                 "sdpa-cudnn", "sdpa-math", "ours"):
        assert flag in causal
    bias = next(s for s in steps if s.name == "attention alibi/t5").cmd
    assert "alibi" in bias and "t5" in bias
    norms = next(s for s in steps if s.name.startswith("norms")).cmd
    assert int(norms[norms.index("--hidden") + 1]) * int(norms[norms.index("--norm-rows") + 1]) == 4096 * 4096
    fits = [s for s in steps if s.group == "fit"]
    assert {s.name for s in fits} == {f"zoo fit {f}" for f in gc.FAMILIES} | {"zoo fit gpt fsdp2"}
    for s in fits:
        joined = " ".join(s.cmd)
        assert f"{gc.MODEL_CONFIG}.attn_impl triton" in joined and f"{gc.MODEL_CONFIG}.norm_impl triton" in joined
        assert f"{gc.MODEL_CONFIG}.attn_dropout 0.0" in joined  # else training attention falls back to torch
        assert ("gpu-fsdp.yaml" in joined) == s.name.endswith("fsdp2") and s.parallel
    # serial steps one after another, then the fits side by side: within the budget
    assert sum(s.budget_s for s in steps if not s.parallel) + max(s.budget_s for s in fits) <= 480 + 1e-6
    assert [s.group for s in gc.plan(gc.parse_args(["--only", "bench"]))] == ["bench"] * 3


def test_dry_run_prints_the_steps_and_runs_nothing(gc, capsys):
    assert gc.main(["--dry-run"], cuda_available=False) == 0
    out = capsys.readouterr().out
    assert "zoo fit clip" in out and "benchmarks/kernel_bench.py" in out and gc.NO_GPU_MESSAGE not in out


def _step(gc, name, code, budget=30.0, needs=(), parallel=False):
    return gc.Step(name, "tests", [sys.executable, "-c", code], budget, needs, parallel)


def test_steps_run_time_out_and_skip(gc, tmp_path):
    steps = [
        _step(gc, "passes", "print('collected'); print('== 3 passed, 1 skipped in 0.5s ==')"),
        _step(gc, "fails", "import sys; print('boom'); sys.exit(3)"),
        _step(gc, "hangs", "import time; time.sleep(60)", budget=1.0),
        _step(gc, "needs missing", "print('never')", needs=("no_such_module_xyz",)),
        _step(gc, "side a", "import time; time.sleep(0.5); print('a done')", parallel=True),
        _step(gc, "side b", "import time; time.sleep(0.5); print('b done')", parallel=True),
    ]
    lines = []
    start = time.time()
    gc.run_steps(steps, time.time() + 60, tmp_path, emit=lines.append)
    assert time.time() - start < 20  # the hang was cut at its 1 s budget, the side steps ran together
    result = {s.name: s.result for s in steps}
    assert result["passes"]["status"] == "ok" and result["passes"]["detail"] == "3 passed, 1 skipped in 0.5s"
    assert result["fails"]["status"] == "FAIL" and result["fails"]["rc"] == 3 and result["fails"]["detail"] == "boom"
    assert result["hangs"]["status"] == "timeout"
    assert result["needs missing"]["status"] == "skipped" and "no_such_module_xyz" in result["needs missing"]["detail"]
    assert sum("no_such_module_xyz not installed" in ln for ln in lines) == 1  # one line, no traceback
    assert result["side a"]["detail"] == "a done" and result["side b"]["status"] == "ok"


def test_past_the_deadline_steps_are_skipped(gc, tmp_path):
    steps = [_step(gc, "late", "print('x')")]
    gc.run_steps(steps, time.time() - 1, tmp_path, emit=lambda _: None)
    assert steps[0].result["status"] == "skipped" and steps[0].result["detail"] == "out of time"


def test_results_and_summary_table(gc, tmp_path):
    steps = [_step(gc, "pytest -m gpu", ""), _step(gc, "zoo fit gpt", "")]
    steps[0].result = dict(status="ok", rc=0, seconds=12.5, detail="5 passed in 12s", log_tail="...")
    steps[1].result = dict(status="FAIL", rc=1, seconds=3.0, detail="ValueError: x", log_tail="Traceback")
    table = gc.summary_table(steps)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["step", "status", "seconds", "detail"]
    assert lines[2].split() == ["pytest", "-m", "gpu", "ok", "12.5", "5", "passed", "in", "12s"]
    assert "FAIL" in lines[3] and "ValueError: x" in lines[3]
    meta = dict(device="NVIDIA H200 (test)", torch="2.11", triton="3.6", cuda="13.0", date="d", seconds=15.5, budget=480)
    json_path, md_path = gc.write_results(steps, meta, tmp_path)
    assert json_path.name == "gpu-check-nvidia-h200-test.json"
    record = json.loads(json_path.read_text())
    assert record["device"] == meta["device"] and [s["status"] for s in record["steps"]] == ["ok", "FAIL"]
    assert record["steps"][1]["log_tail"] == "Traceback" and record["steps"][0]["cmd"][0] == sys.executable
    assert table in md_path.read_text() and "torch 2.11, triton 3.6" in md_path.read_text()


def test_a_fit_reports_its_last_training_loss(gc, tmp_path):
    logs = tmp_path / "logs" / "version_0"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("epoch,step,train/loss,val/loss\n0,9,5.5,\n0,19,4.25,\n0,19,,4.0\n")
    assert gc.last_train_loss(str(tmp_path)) == (19, 4.25)
    assert gc.last_train_loss(str(tmp_path / "none")) is None
    step = gc.Step("zoo fit gpt", "fit", [sys.executable, "-c", "print('done')"], 30.0, (), True, str(tmp_path))
    gc.run_steps([step], time.time() + 30, tmp_path, emit=lambda _: None)
    assert step.result["status"] == "ok" and step.result["detail"] == "step 19: train loss 4.2500"
