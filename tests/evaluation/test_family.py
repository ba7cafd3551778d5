"""`zoo evaluate --tasks family` on a checkpoint reproduces the validation figures its `zoo fit` logged
(metrics.csv), on the same split and batches (`--limit_batches` = the run's limit_val_batches), for
every family and a fine-tuned classifier; and the report puts several models side by side."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.interop.conftest import FITS, TRAINER
from zoo.cli import main

pytest.importorskip("lm_eval", reason="the eval extra (pip install 'zoo[eval]')")
pytestmark = pytest.mark.xdist_group("evaluation")


def run_dir(ckpt: Path) -> Path:
    return ckpt.parent.parent  # logs/version_N/checkpoints/last.ckpt


def logged(ckpt: Path) -> dict[str, float]:
    """The last logged value of each val/ metric."""
    out = {}
    with open(run_dir(ckpt) / "metrics.csv") as f:
        for row in csv.DictReader(f):
            out.update({k.removeprefix("val/"): float(v) for k, v in row.items() if k.startswith("val/") and v})
    return out


def limit_val_batches(ckpt: Path) -> int:
    return int(yaml.safe_load((run_dir(ckpt) / "config.yaml").read_text())["trainer"]["limit_val_batches"])


def evaluate(args: list[str], out: Path, capsys=None) -> dict:
    assert main(["evaluate", *args, "--out_dir", str(out)]) == 0
    return json.loads((out / "eval.json").read_text())


@pytest.fixture(scope="session")
def t5_decoding(tmp_path_factory):
    """A 2-step T5 fit whose validation also decodes (greedy and beam) and logs BLEU and ROUGE-L."""
    config, overrides = FITS["t5"]
    overrides = [*overrides]
    overrides[overrides.index("--model.init_args.generate_batches") + 1] = "1"
    root, cache = tmp_path_factory.mktemp("fit-t5-decode"), str(tmp_path_factory.mktemp("cache-t5"))
    args = ["fit", "-c", config, *TRAINER, *overrides, "--model.init_args.generate_examples", "3",
            "--model.init_args.num_beams", "2", "--data.init_args.cache_dir", cache,
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root)]
    assert main(args) == 0
    (ckpt,) = sorted(root.rglob("last.ckpt"))
    return ckpt


@pytest.fixture(scope="session")
def instruction_tuned(tmp_path_factory):
    """A 2-step instruction-tuning fit. At this size each validation row holds one example, so packed
    positions and segments are not exercised here; the checkpoint's task type and data are."""
    m = "--model.init_args.model.init_args.config."
    root, cache = tmp_path_factory.mktemp("fit-sft"), str(tmp_path_factory.mktemp("cache-sft"))
    args = ["fit", "-c", "configs/gpt/sft.yaml", *TRAINER, "--model.init_args.sample_tokens", "4",
            f"{m}max_seq_len", "64", f"{m}d_model", "32", f"{m}n_layer", "1", f"{m}n_head", "2",
            "--data.init_args.vocab_size", "400", "--data.init_args.block_size", "64", "--data.init_args.batch_size", "4",
            "--data.init_args.cache_dir", cache, "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root)]
    assert main(args) == 0
    (ckpt,) = sorted(root.rglob("last.ckpt"))
    return ckpt


def test_instruction_tuned_perplexity(instruction_tuned, tmp_path):
    ckpt = instruction_tuned
    scores = evaluate(["--model", str(ckpt), "--tasks", "family", "--limit_batches", str(limit_val_batches(ckpt))],
                      tmp_path)["scores"]
    (row,) = scores.values()
    assert row["family/ppl"] == pytest.approx(logged(ckpt)["ppl"], rel=1e-5)


# family metric names in the report ↔ what the task logs
EXPECTED = {
    "gpt": ["ppl"], "bert": ["ppl", "acc"], "bart": ["ppl"], "clip": ["i2t_R@1", "t2i_R@1", "i2t_R@5", "zero_shot_acc"],
    "bert-cls": ["acc", "macro_f1"], "gpt-cls": ["acc", "macro_f1"],
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_family_metrics_reproduce_logged_validation(fitted, tmp_path, name):
    ckpt = fitted(name)
    scores = evaluate(["--model", str(ckpt), "--tasks", "family", "--limit_batches", str(limit_val_batches(ckpt))],
                      tmp_path)["scores"]
    (row,) = scores.values()
    want = logged(ckpt)
    for metric in EXPECTED[name]:
        assert row[f"family/{metric}"] == pytest.approx(want[metric], rel=1e-5, abs=1e-6), metric


def test_seq2seq_decoding_reproduces_bleu_and_rouge(t5_decoding, tmp_path):
    ckpt = t5_decoding
    scores = evaluate(["--model", str(ckpt), "--tasks", "family", "--limit_batches", str(limit_val_batches(ckpt))],
                      tmp_path)["scores"]
    (row,) = scores.values()
    want = logged(ckpt)
    for metric in ("ppl", "bleu_greedy", "bleu_beam", "rougeL_greedy", "rougeL_beam"):
        assert row[f"family/{metric}"] == pytest.approx(want[metric], rel=1e-5, abs=1e-6), metric
    assert max(want[m] for m in ("rougeL_greedy", "rougeL_beam", "bleu_greedy", "bleu_beam")) > 0  # not just 0 == 0


def test_report_lists_models_side_by_side(fitted, task_cache, tmp_path, capsys):
    gpt, bert = fitted("gpt"), fitted("bert")
    out = tmp_path / "report"
    result = evaluate(["--model", str(gpt), str(bert), "--names", "nano-gpt", "tiny-bert", "--limit_batches", "1",
                       "--limit", "4", "--task_cache", str(task_cache)], out)
    scores = result["scores"]
    assert list(scores) == ["nano-gpt", "tiny-bert"]
    # the GPT gets the offline harness tasks by default, the BERT (no causal LM) only its own metrics
    assert {"family/ppl", "family/bpc", "zoo_pydoc_perplexity/bits_per_byte", "zoo_pydoc_topic/acc"} <= set(scores["nano-gpt"])
    assert not any(k.startswith("zoo_pydoc") for k in scores["tiny-bert"])
    with open(out / "eval.csv") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ["model", "nano-gpt", "tiny-bert"]
    assert float(rows[1][rows[0].index("family/ppl")]) == pytest.approx(scores["nano-gpt"]["family/ppl"])
    assert (out / "eval.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "nano-gpt" in printed and "tiny-bert" in printed and "family/ppl" in printed
    assert result["sources"] == {"nano-gpt": str(gpt), "tiny-bert": str(bert)}
    assert result["versions"]["lm_eval"]


@pytest.mark.parametrize("args, message", [
    (["--tasks", "zoo_pydoc_perplexty"], "unknown task 'zoo_pydoc_perplexty': did you mean zoo_pydoc_perplexity"),
    (["--tasks", "zoo_pydoc_topic"], "lm-eval harness tasks needs a model with causal lm; a bert model offers"),
])
def test_refusals_are_one_line_with_status_2(fitted, task_cache, tmp_path, capsys, args, message):
    ckpt = fitted("bert")
    code = main(["evaluate", "--model", str(ckpt), *args, "--task_cache", str(task_cache), "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_hf_directory_with_data_config(fitted, task_cache, tmp_path, capsys):
    """A Hugging Face export knows no data: `--data` (the run's fit config) gives the split, and the model's
    own tokenizer.json is used for it; the figure equals the checkpoint's logged one. Without `--data`,
    the default tasks skip the family metrics with a note and still run the harness."""
    from zoo.checkpoint import load_model
    from zoo.interop.hf import to_hf

    ckpt = fitted("gpt")
    model, tok = load_model(str(ckpt))
    directory = to_hf(model, tmp_path / "hf", tokenizer=tok)
    scores = evaluate(["--model", str(directory), "--tasks", "family", "--data", str(run_dir(ckpt) / "config.yaml"),
                       "--limit_batches", str(limit_val_batches(ckpt))], tmp_path / "a")["scores"]
    assert scores["hf"]["family/ppl"] == pytest.approx(logged(ckpt)["ppl"], rel=1e-5)
    scores = evaluate(["--model", str(directory), "--limit", "2", "--task_cache", str(task_cache)], tmp_path / "b")["scores"]
    assert "note: no family metrics" in capsys.readouterr().out
    assert set(scores["hf"]) == {"zoo_pydoc_perplexity/word_perplexity", "zoo_pydoc_perplexity/byte_perplexity",
                                 "zoo_pydoc_perplexity/bits_per_byte", "zoo_pydoc_topic/acc", "zoo_pydoc_topic/acc_norm"}
