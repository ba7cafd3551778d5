"""benchmarks/train_throughput.py runs end to end at a tiny size and records what it measured."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def test_train_throughput_writes_results(tmp_path):
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "tt"
    args = ["--d-model", "32", "--layers", "1", "--heads", "2", "--seq", "16", "--batch", "2", "--vocab", "128",
            "--steps", "2", "--warmup", "1", "--out", str(out)]
    assert bench.main(args) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert set(record["tokens_per_s"]) == {"zoo", "hf", "hf_no_cache"}
    # the same weights and batch give the same first loss: the two models really are identical
    assert abs(record["first_step_loss"]["zoo"] - record["first_step_loss"]["hf"]) < 1e-4
    assert record["device"] and record["versions"]["torch"]
    assert out.with_suffix(".csv").read_text().count("\n") == 4
