"""benchmarks/clip_zero_shot.py trains the tiny CLIP through `zoo fit` and records what it measured."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "clip_zero_shot.py"


@pytest.mark.slow
def test_clip_zero_shot_writes_results(tmp_path):
    spec = importlib.util.spec_from_file_location("clip_zero_shot", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "clip.json"
    overrides = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.enable_progress_bar", "false",
                 "--data.init_args.batch_size", "16", "--model.init_args.warmup_steps", "1"]
    assert bench.main(["--out", str(out), "--", *overrides]) == 0
    record = json.loads(out.read_text())
    assert record["steps"] == 4
    assert record["overrides"] == overrides
    assert record["train_pairs"] + record["val_pairs"] == 1797  # scikit-learn's digits, split without loss
    acc = record["metrics"]["val/zero_shot_acc"]
    assert 0.0 <= acc <= 1.0
    assert record["metrics"]["val/t2i_R@5"] >= record["metrics"]["val/t2i_R@1"]
    assert record["versions"]["torch"] and record["device"]
