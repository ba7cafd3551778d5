"""Seq2SeqLM: teacher-forced training of tiny T5/BART and BLEU/ROUGE-L scoring of their decodes."""

import random

import lightning as L
import pytest
import torch
from torch import nn

from zoo.data import SpanCorruptionDataModule, TextInfillingDataModule
from zoo.errors import ZooError
from zoo.models import Bart, BartConfig, T5, T5Config
from zoo.tasks import Seq2SeqLM
from zoo.tasks.seq2seq_lm import ids_to_text

WORDS = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "qua", "dor", "pel"]
DECODE_METRICS = {"val/bleu_greedy", "val/bleu_beam", "val/rougeL_greedy", "val/rougeL_beam"}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP spin-waiting (10× faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_corpus(folder, n_docs=30, seed=0):
    rng = random.Random(seed)
    folder.mkdir()
    for i in range(n_docs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
                     for _ in range(rng.randint(10, 20))]
        (folder / f"doc{i}.txt").write_text(" ".join(sentences))
    return str(folder)


def trainer(steps: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=2)


def test_ids_to_text_cuts_at_eos_and_drops_padding():
    assert ids_to_text([0, 5, 6, 1, 7, 0], None, drop={0}, stop=1) == "5 6"
    assert ids_to_text([5, -100, 6], None, drop=set(), stop=None) == "5 6"


class Echo(nn.Module):
    """A stand-in encoder-decoder whose `generate` returns the start token and then `answer`."""

    def __init__(self, answer):
        super().__init__()
        self.config = T5Config(vocab_size=50)
        self.answer = answer
        self.weight = nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, attention_mask=None, max_new_tokens=20, num_beams=1):
        start = torch.zeros(len(self.answer), 1, dtype=torch.long)
        return torch.cat([start, self.answer], 1)


def test_bleu_and_rouge_of_perfect_and_partial_decodes():
    labels = torch.tensor([[5, 6, 7, 8, 9, 1], [10, 11, 12, 13, 1, -100]])
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "labels": labels}
    task = Seq2SeqLM(Echo(labels.clamp(min=0)))
    task._score_decoding(batch, 0)
    assert task.bleu["greedy"].compute().item() == pytest.approx(1.0)
    assert task.rouge["beam"].compute()["rougeL_fmeasure"].item() == pytest.approx(1.0)
    partial = torch.tensor([[5, 6, 7, 8, 21, 1], [10, 11, 30, 31, 1, 0]])  # 4 of 5 and 2 of 4 tokens right
    task = Seq2SeqLM(Echo(partial))
    task._score_decoding(batch, 0)
    rouge = task.rouge["greedy"].compute()["rougeL_fmeasure"].item()
    assert rouge == pytest.approx((0.8 + 0.5) / 2)  # mean of the two LCS F1 scores
    # corpus BLEU: 1-4-gram precisions 6/9, 4/7, 2/5, 1/3 (smoothed +1 above unigrams), no brevity penalty
    expected = (6 / 9 * 5 / 8 * 3 / 6 * 2 / 4) ** 0.25
    assert task.bleu["greedy"].compute().item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_training_reduces_loss_and_validation_scores_decodes(tmp_path, family):
    torch.manual_seed(0)
    common = dict(source=write_corpus(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache"), vocab_size=300,
                  block_size=32, batch_size=16)
    if family == "t5":
        dm = SpanCorruptionDataModule(**common)
        model = T5(T5Config(vocab_size=dm.model_vocab_size, d_model=64, d_kv=16, d_ff=128, n_layer=2, n_head=4,
                            dropout=0.0, attn_dropout=0.0))
    else:
        dm = TextInfillingDataModule(**common)
        model = Bart(BartConfig(vocab_size=dm.model_vocab_size, max_seq_len=32, d_model=64, n_layer=1, n_head=4,
                                d_ff=128, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0))
    task = Seq2SeqLM(model, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), warmup_steps=5,
                     generate_examples=4, num_beams=2)
    before = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    trainer(40).fit(task, datamodule=dm)
    after = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    assert DECODE_METRICS <= set(after) and "val/ppl" in after
    assert all(0.0 <= after[k] <= 1.0 for k in DECODE_METRICS)
    assert after["val/loss"] < before["val/loss"] - 1.0
    assert task.last_examples and all(isinstance(t, str) for t in task.last_examples[0])


def test_special_id_mismatch_is_a_clear_error(tmp_path):
    dm = SpanCorruptionDataModule(source=write_corpus(tmp_path / "corpus", 8), cache_dir=str(tmp_path / "cache"),
                                  vocab_size=300, block_size=32, batch_size=4)
    model = T5(T5Config(vocab_size=dm.model_vocab_size, d_model=32, d_kv=8, d_ff=64, n_layer=1, n_head=4,
                        pad_token_id=1, eos_token_id=0))
    with pytest.raises(ZooError, match="pad_token_id"):
        trainer(1).validate(Seq2SeqLM(model), datamodule=dm, verbose=False)
