"""Throughput and MFU: the meta-device FLOP count of a tiny GPT equals the count written out by hand
from its config, and a short `zoo fit` logs tokens/s, samples/s, TFLOP/s and MFU consistent with it."""

import csv
import math
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer

from zoo.callbacks import Throughput, batch_counts, measured_matmul_peak, training_flops
from zoo.cli import main
from zoo.models import GPT
from zoo.models.gpt import GPTConfig

ROOT = Path(__file__).resolve().parents[2]


def gpt_training_flops(B: int, T: int, d: int, L: int, V: int, d_ff: int) -> int:
    """Forward + backward FLOPs of GPT's matrix products, by hand (Kaplan et al. 2020, PaLM app. B).

    Per token, each weight matrix costs 2 FLOPs per entry forward and 4 backward: 6·N, with N the
    matrix entries (per layer q, k, v, o: 4d², the MLP: 2·d·d_ff; plus the d×V output head). The
    attention scores QKᵀ and the weighted sum AV cost 2·T·d each per token and layer forward,
    tripled with the backward: 12·L·T²·d per sequence.
    """
    n_matrix = L * (4 * d * d + 2 * d * d_ff) + V * d
    return 6 * n_matrix * B * T + 12 * L * B * T * T * d


def test_meta_flop_count_matches_the_analytic_count():
    for B, T, d, L, H, V in [(2, 16, 32, 2, 4, 100), (3, 24, 48, 3, 6, 77)]:
        model = GPT(GPTConfig(vocab_size=V, max_seq_len=T, d_model=d, n_layer=L, n_head=H, dropout=0.1))
        batch = {"input_ids": torch.zeros(B, T, dtype=torch.long), "labels": torch.zeros(B, T, dtype=torch.long)}
        assert training_flops(model, batch) == gpt_training_flops(B, T, d, L, V, 4 * d)
        assert all(p.device.type == "cpu" for p in model.parameters())  # the real model is left alone


def test_text_to_text_classification_batches_are_counted_like_seq2seq_batches():
    """Text-to-text classification carries class indices in `labels` (B,) and the label names' ids in
    `target_ids` (B, L): the decoder's FLOPs follow `target_ids`, as a seq2seq batch's follow `labels`."""
    from zoo.models.bart import Bart, BartConfig
    from zoo.models.t5 import T5, T5Config

    B, T, L = 3, 12, 4
    ids = torch.ones(B, T, dtype=torch.long)
    mask = torch.ones(B, T, dtype=torch.long)
    for model in (T5(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, n_layer=2, n_head=4)),
                  Bart(BartConfig(vocab_size=64, max_seq_len=32, d_model=32, n_layer=2, n_head=4, d_ff=64))):
        seq2seq = training_flops(model, {"input_ids": ids, "attention_mask": mask,
                                         "labels": torch.ones(B, L, dtype=torch.long)})
        classify = training_flops(model, {"input_ids": ids, "attention_mask": mask,
                                          "labels": torch.zeros(B, dtype=torch.long),
                                          "target_ids": torch.ones(B, L, dtype=torch.long)})
        longer = training_flops(model, {"input_ids": ids, "attention_mask": mask,
                                        "labels": torch.ones(B, L + 3, dtype=torch.long)})
        assert classify == seq2seq < longer


def test_classifiers_are_counted_without_the_language_model_head():
    """A classifier never runs the pre-training head: GPT's count is the analytic one minus the V×d
    head, BERT's that of its encoder and pooler (less than the masked-LM forward's)."""
    from zoo.models.bert import Bert, BertConfig
    from zoo.tasks import SequenceClassification

    B, T, d, L, V = 2, 16, 32, 2, 300
    batch = {"input_ids": torch.ones(B, T, dtype=torch.long), "attention_mask": torch.ones(B, T, dtype=torch.long),
             "labels": torch.zeros(B, dtype=torch.long)}
    gpt = SequenceClassification(GPT(GPTConfig(vocab_size=V, max_seq_len=T, d_model=d, n_layer=L, n_head=4)), num_labels=3)
    counted = training_flops(gpt.model, batch, gpt.flop_forward)
    assert counted == gpt_training_flops(B, T, d, L, V, 4 * d) - 6 * V * d * B * T
    bert = SequenceClassification(Bert(BertConfig(vocab_size=V, d_model=d, n_layer=L, n_head=4, d_ff=4 * d)), num_labels=3)
    pooled = training_flops(bert.model, batch, bert.flop_forward)
    body = 6 * L * (4 * d * d + 2 * d * 4 * d) * B * T + 12 * L * B * T * T * d
    assert pooled == body + 6 * d * d * B  # the pooler's d×d on the [CLS] token
    assert pooled < training_flops(bert.model, batch)


def test_token_counts_use_the_mask_or_the_labels():
    ids = torch.ones(2, 5, dtype=torch.long)
    labels = torch.tensor([[1, 2, -100, -100, -100], [1, 2, 3, 4, -100]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert batch_counts({"input_ids": ids, "labels": labels}, False)[0] == 6  # causal LM: real targets
    assert batch_counts({"input_ids": ids, "attention_mask": mask, "labels": labels}, False)[0] == 8
    assert batch_counts({"input_ids": ids, "attention_mask": mask, "labels": labels}, True)[0] == 8 + 6
    pixels = torch.zeros(3, 3, 8, 8)
    assert batch_counts({"pixel_values": pixels, "input_ids": ids[:3], "attention_mask": mask}, False)[1] == 3


def test_cpu_peak_is_a_measured_matmul_rate():
    peak = measured_matmul_peak(torch.get_num_threads(), n=256, repeats=2)
    assert 1e8 < peak < 1e14  # a real machine's fp32 rate: well above 0.1 GFLOP/s, below 100 TFLOP/s
    assert Throughput(peak_flops=5e9).peak == 5e9


def _corpus(folder: Path) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice("aeioubdgklmnprst") for _ in range(rng.randint(2, 6))) for _ in range(60)]
    folder.mkdir()
    for i in range(20):
        (folder / f"d{i}.txt").write_text(" ".join(rng.choice(words) for _ in range(150)) + ".", encoding="utf-8")


def test_short_run_logs_tokens_per_second_and_mfu(tmp_path):
    _corpus(tmp_path / "corpus")
    B, T, d, L, peak = 4, 16, 16, 1, 2e9
    argv = ["fit", "-c", str(ROOT / "configs/gpt/nano.yaml"),
            "--model.init_args.model.init_args.config.d_model", str(d),
            "--model.init_args.model.init_args.config.n_layer", str(L),
            "--model.init_args.model.init_args.config.n_head", "2",
            "--model.init_args.model.init_args.config.max_seq_len", str(T),
            "--model.init_args.sample_prompt", "",
            "--data.init_args.source", str(tmp_path / "corpus"), "--data.init_args.vocab_size", "300",
            "--data.init_args.block_size", str(T), "--data.init_args.batch_size", str(B),
            "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "1", "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.callbacks+", f"{{class_path: zoo.callbacks.Throughput, init_args: {{peak_flops: {peak}}}}}"]
    assert main(argv) == 0
    rows = [r for r in csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()) if r.get("perf/tokens_per_s")]
    assert len(rows) == 6
    V = Tokenizer.from_file(str(next(tmp_path.rglob("tokenizer.json")))).get_vocab_size()  # the model's vocab_size
    per_sample = gpt_training_flops(B, T, d, L, V, 4 * d) / B
    for row in rows:
        tokens, samples = float(row["perf/tokens_per_s"]), float(row["perf/samples_per_s"])
        flops, mfu = float(row["perf/tflops_per_s"]) * 1e12, float(row["perf/mfu"])
        assert tokens > 0 and math.isclose(tokens / samples, T, rel_tol=1e-4)  # every position is a real target
        assert math.isclose(flops / samples, per_sample, rel_tol=1e-4)  # FLOP/s follow from the FLOPs per batch
        assert math.isclose(mfu, flops / peak, rel_tol=1e-4)  # against the peak given in the config


def test_zoo_fit_adds_default_callbacks_once_and_keeps_the_configs(tmp_path):
    """The defaults join the YAML's callbacks; one the config lists itself replaces its default."""
    from zoo.callbacks import NonFiniteLoss, RNGState
    from zoo.lightning_cli import ZooCLI

    _corpus(tmp_path / "corpus")
    cli = ZooCLI(args=["-c", str(ROOT / "configs/gpt/nano.yaml"), "--data.init_args.source", str(tmp_path / "corpus"),
                       "--data.init_args.vocab_size", "300", "--data.init_args.cache_dir", str(tmp_path / "cache"),
                       "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                       "--trainer.callbacks+", "{class_path: zoo.callbacks.NonFiniteLoss, init_args: {action: skip}}"],
                 run=False)
    kinds = [type(cb).__name__ for cb in cli.trainer.callbacks]
    assert kinds.count("ModelCheckpoint") == 1  # from nano.yaml
    for kind in (Throughput, NonFiniteLoss, RNGState):
        assert kinds.count(kind.__name__) == 1
    assert next(cb for cb in cli.trainer.callbacks if isinstance(cb, NonFiniteLoss)).action == "skip"
