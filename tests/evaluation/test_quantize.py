"""`zoo evaluate --quantize SCHEME`: the model is quantized after loading and before scoring, its
perplexity stays within 2% of the float model's, and eval.json records the scheme; a scheme the device
lacks fails in one line before anything loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from zoo.cli import main

pytest.importorskip("torchao")
pytestmark = pytest.mark.xdist_group("evaluation")

WORDS = ("the model reads a token and predicts the next one from the context it has seen so far while "
         "every layer mixes attention with a small feed forward network").split()


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    """A random tiny GPT checkpoint with a BPE tokenizer trained on a small corpus, and a `--data` config
    (that corpus, blocks of 32 tokens) for its family metrics."""
    from zoo.compress.prune import save_checkpoint
    from zoo.data import TextDataModule
    from zoo.models import GPT, GPTConfig

    root = tmp_path_factory.mktemp("eval-quantize")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(12):
        (corpus / f"doc{i}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(150)) + ".\n")
    data = {"source": str(corpus), "vocab_size": 200, "block_size": 32, "batch_size": 4,
            "cache_dir": str(root / "cache")}
    dm = TextDataModule(**data)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=dm.tokenizer.get_vocab_size(), max_seq_len=32, d_model=64, n_layer=2, n_head=4,
                    d_ff=128, init_std=0.1)
    ckpt = root / "tiny.ckpt"
    save_checkpoint(GPT(cfg).eval(), ckpt, dm.tokenizer)
    config = root / "data.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "zoo.data.TextDataModule", "init_args": data}}))
    return ckpt, config


def evaluate(ckpt: Path, config: Path, out: Path, task_cache: Path, *extra: str) -> dict:
    """The family perplexity (4 batches) and the offline harness perplexity task (2 documents, lm-eval)."""
    args = ["evaluate", "--model", str(ckpt), "--tasks", "family", "zoo_pydoc_perplexity", "--data", str(config),
            "--limit_batches", "4", "--limit", "2", "--task_cache", str(task_cache), "--out_dir", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / "eval.json").read_text())


def test_quantized_perplexity_within_2_percent_and_recorded(tiny_gpt, task_cache, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="the eval extra (pip install 'zoo[eval]')")
    from zoo.evaluation import loading

    ckpt, config = tiny_gpt
    scored = []
    prepare = loading.prepare
    monkeypatch.setattr(loading, "prepare", lambda model, quantize=None: scored.append(prepare(model, quantize))
                        or scored[-1])
    float_run = evaluate(ckpt, config, tmp_path / "float", task_cache)
    int8_run = evaluate(ckpt, config, tmp_path / "int8", task_cache, "--quantize", "int8-weight")
    # the scored model is the quantized one: its stack linears hold torchao int8 tensors
    assert type(scored[0].decoder.layers[0].mlp.up_proj.weight).__name__ == "Parameter"
    assert type(scored[1].decoder.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    (row,), (row_q,) = float_run["scores"].values(), int8_run["scores"].values()
    for metric in ("family/ppl", "zoo_pydoc_perplexity/word_perplexity"):  # own metrics, lm-eval wrapper
        assert row_q[metric] != row[metric] and abs(row_q[metric] - row[metric]) / row[metric] < 0.02, metric
    assert float_run["settings"]["quantize"] is None and float_run["quantization"] == {"tiny": None}
    assert int8_run["settings"]["quantize"] == "int8-weight" and int8_run["quantization"] == {"tiny": "int8-weight"}


def test_unavailable_scheme_fails_in_one_line_before_loading(tiny_gpt, tmp_path, capsys, monkeypatch):
    import zoo.checkpoint

    ckpt, config = tiny_gpt
    monkeypatch.setattr(zoo.checkpoint, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code = main(["evaluate", "--model", str(ckpt), "--tasks", "family", "--data", str(config), "--quantize",
                 "int4-weight", "--device", "cpu", "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "'int4-weight' needs a CUDA GPU" in err[0], err
    assert not (tmp_path / "eval.json").exists()
