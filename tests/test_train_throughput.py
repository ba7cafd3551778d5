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
    rows = {"zoo_labels", "hf_labels", "hf_labels_no_cache", "zoo", "hf", "hf_no_cache"}
    assert set(record["tokens_per_s"]) == set(record["median_step_s"]) == set(record["rows"]) == rows
    # the same weights and batch give the same first loss on every row: zoo's fused `labels=` loss, HF's own
    # `labels=` loss (shifted inside HF) and cross-entropy on either model's logits all train the same tokens
    first = record["first_step_loss"]
    assert max(first.values()) - min(first.values()) < 1e-4, first
    med = record["median_step_s"]
    assert record["speedup"]["zoo_labels_over_hf_labels"] == pytest.approx(med["hf_labels"] / med["zoo_labels"])
    assert len(record["speedup"]) == 2 * 4 and all(r > 0 for r in record["speedup"].values())
    assert record["device"] and record["versions"]["torch"]
    assert out.with_suffix(".csv").read_text().count("\n") == 1 + len(rows)
