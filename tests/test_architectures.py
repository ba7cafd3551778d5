"""`zoo compare` (zoo.compare, and its script benchmarks/architectures.py): a tiny-budget run end to end (results files, plots,
parameter counts, the FLOPs budget), the matched default sizes, and its command line."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.compare import compare
from zoo.models import GPT, T5, Bart, BartConfig, Bert, BertConfig, GPTConfig, T5Config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "architectures.py"
MODELS = ("gpt", "bert", "t5", "bart", "clip")
TINY = {"gpt": (32, 2, 2, 96), "bert": (32, 2, 2, 96), "t5": (32, 1, 2, 64), "bart": (32, 1, 2, 64)}
BUDGET_FLOPS = 4e8  # a few steps of each tiny model
# `make test` runs two xdist workers: one group keeps the module's single tiny run on one of them.
pytestmark = pytest.mark.xdist_group("architectures")


def tiny_args() -> list[str]:
    sizes = [arg for family, (d, n, h, f) in TINY.items() for arg in
             (f"--{family}.d_model", str(d), f"--{family}.n_layer", str(n), f"--{family}.n_head", str(h),
              f"--{family}.d_ff", str(f))]
    return ["--budget-flops", str(BUDGET_FLOPS), "--finetune-steps", "2", "--block-size", "32", "--batch-size", "4",
            "--val-batches", "2", "--timing-steps", "2", "--log-every", "1", *sizes]


def build(family: str, d: int, n: int, h: int, f: int, vocab: int, block: int):
    """The model a size stands for, built here from zoo.models (not by the benchmark)."""
    if family == "gpt":
        return GPT(GPTConfig(vocab_size=vocab, max_seq_len=block, d_model=d, n_layer=n, n_head=h, d_ff=f))
    if family == "bert":
        return Bert(BertConfig(vocab_size=vocab, max_seq_len=block, d_model=d, n_layer=n, n_head=h, d_ff=f,
                               pooler=False))
    if family == "t5":
        return T5(T5Config(vocab_size=vocab, d_model=d, d_kv=d // h, n_layer=n, n_head=h, d_ff=f))
    return Bart(BartConfig(vocab_size=vocab, max_seq_len=block, d_model=d, n_layer=n, n_head=h, d_ff=f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("architectures")
    proc = subprocess.run([sys.executable, str(SCRIPT), *tiny_args(), "--out-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


@pytest.mark.slow
def test_tiny_run_writes_a_finite_row_per_model(tiny_run):
    out, stdout = tiny_run
    if not torch.cuda.is_available():
        assert (out / "architectures-cpu.csv").is_file()  # the device names the files
    with open(next(out.glob("architectures-*.csv"))) as f:
        rows = {r["family"]: r for r in csv.DictReader(f)}
    assert list(rows) == list(MODELS)
    for name, r in rows.items():
        for key in ("non_embedding_params", "steps", "tokens", "tokens_per_s", "mfu", "flops_per_token",
                    "median_step_ms", "val_loss", "step_ms_eager", "step_ms_torch", "peak_memory_mib"):
            value = float(r[key])
            assert math.isfinite(value) and value >= 0, (name, key, r[key])
            assert value > 0 or key == "peak_memory_mib", (name, key)
        assert float(r["mfu"]) < 10  # a fraction of the peak: not off by a unit (ms for s, GFLOP for FLOP)
        if torch.cuda.is_available():
            assert float(r["step_ms_triton"]) > 0
        else:
            assert r["step_ms_triton"] == "n/a (needs CUDA)"
    for family in TINY:
        assert int(rows[family]["finetune_steps"]) == 2
        assert 0 <= float(rows[family]["finetune_acc"]) <= 1 and 0 <= float(rows[family]["finetune_macro_f1"]) <= 1
    assert 0 <= float(rows["clip"]["zero_shot_acc"]) <= 1
    table = next(out.glob("architectures-*.md")).read_text()
    assert table.strip() in stdout  # the table is printed too
    assert all(f"| {family} |" in table for family in TINY)


@pytest.mark.slow
def test_tiny_run_counts_parameters_and_spends_the_flops_budget(tiny_run):
    out, _ = tiny_run
    results = json.loads(next(out.glob("architectures-*.json")).read_text())
    counts = {}
    for family, (d, n, h, f) in TINY.items():
        pre = results["families"][family]["pretrain"]
        model = build(family, d, n, h, f, pre["vocab_size"], 32)
        counts[family] = model.num_parameters()
        assert pre["non_embedding_params"] == counts[family]
        assert pre["total_params"] == sum(p.numel() for p in model.parameters())
        assert pre["steps"] == max(1, int(BUDGET_FLOPS // pre["flops_per_step"]))  # steps = budget / step FLOPs
        assert pre["tokens"] == pre["steps"] * pre["tokens_per_step"]  # fixed-shape pre-training batches
    mean = sum(counts.values()) / len(counts)
    assert results["params_matched"] == all(abs(c / mean - 1) <= 0.05 for c in counts.values())
    for name, pre in [(f, r["pretrain"]) for f, r in results["families"].items()] + [("clip", results["clip"])]:
        curve = pre["curve"]
        assert len(curve) == pre["steps"], name  # --log-every 1: a point per step
        assert all(math.isfinite(p["loss"]) for p in curve)
        assert [p["tokens"] for p in curve] == sorted(p["tokens"] for p in curve)
        assert curve[-1]["tokens"] == pre["tokens"]
        assert all(b["seconds"] >= a["seconds"] for a, b in zip(curve, curve[1:]))


@pytest.mark.slow
def test_tiny_run_plots_are_images(tiny_run):
    import matplotlib.image

    out, _ = tiny_run
    pngs = sorted(p.name.split("-", 2)[-1] for p in out.glob("*.png"))
    assert pngs == ["loss-seconds.png", "loss-tokens.png", "throughput.png"]
    for path in out.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
        assert image.std() > 0.01  # something was drawn


def test_default_sizes_have_matched_non_embedding_parameters():
    defaults = inspect.signature(compare).parameters
    counts = {f: build(f, *dataclasses.astuple(defaults[f].default), vocab=4096, block=128).num_parameters()
              for f in TINY}
    mean = sum(counts.values()) / len(counts)
    assert all(abs(c / mean - 1) <= 0.05 for c in counts.values()), counts


def test_compare_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code in (0, None)
    text = capsys.readouterr().out
    for name, param in inspect.signature(compare).parameters.items():
        options = [f"--{name}.{field}" for field in param.default.__dict__] if name in TINY else [f"--{name}"]
        for option in options:
            assert option in text, option
    assert text.count("(type:") >= len(inspect.signature(compare).parameters)


@pytest.mark.parametrize("args,message", [
    (["--families", "[]", "--clip", "false"], "nothing to compare"),
    (["--gpt.n_head", "3"], "not a multiple of n_head"),
    (["--budget_seconds", "0"], "budget must be positive"),
])
def test_bad_options_end_in_one_line(args, message, capsys):
    assert main(["compare", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0], err


def test_script_accepts_dashed_option_names():
    script = load_script()
    assert script._underscored("--budget-seconds") == "--budget_seconds"
    assert script._underscored("--out-dir=/a-b/c-d") == "--out_dir=/a-b/c-d"  # the value keeps its dashes
    assert script._underscored("--gpt.d-ff") == "--gpt.d_ff" and script._underscored("-1") == "-1"


def load_script():
    spec = importlib.util.spec_from_file_location("architectures_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
