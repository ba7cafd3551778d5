"""MaskedLM: metrics on hand-made logits, and a few training steps of a tiny BERT."""

import math
import random

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data import MaskedLMDataModule
from zoo.errors import ZooError
from zoo.models import Bert, BertConfig
from zoo.tasks import MaskedLM

WORDS = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "qua", "dor", "pel"]


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
                     limit_val_batches=4)


class FixedLogits(nn.Module):
    """A stand-in model returning the logits it was given."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.config = BertConfig(vocab_size=logits.shape[-1])
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.logits


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_masked_accuracy_and_perplexity_on_hand_made_logits():
    V = 6
    logits = torch.full((1, 5, V), -5.0)
    labels = torch.tensor([[-100, 3, 5, -100, 2]])
    for t, best in enumerate([0, 3, 4, 1, 2]):  # right at positions 1 and 4, wrong at 2
        logits[0, t, best] = 5.0
    task = MaskedLM(FixedLogits(logits))
    task.validation_step({"input_ids": torch.zeros(1, 5, dtype=torch.long), "labels": labels}, 0)
    assert task.val_acc.compute().item() == pytest.approx(2 / 3)
    chosen = labels[0] != -100
    expected = F.cross_entropy(logits[0, chosen], labels[0, chosen])  # only the masked positions count
    assert task.val_loss.compute().item() == pytest.approx(expected.item(), rel=1e-5)
    assert task.val_ppl.compute().item() == pytest.approx(math.exp(expected.item()), rel=1e-4)


def test_training_reduces_the_masked_lm_loss(tmp_path):
    torch.manual_seed(0)
    dm = MaskedLMDataModule(source=write_corpus(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache"),
                            vocab_size=200, block_size=32, batch_size=16, whole_word_masking=True)
    config = BertConfig(vocab_size=dm.model_vocab_size, max_seq_len=32, d_model=64, n_layer=2, n_head=2,
                        d_ff=128, dropout=0.0, attn_dropout=0.0)
    task = MaskedLM(Bert(config), optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), warmup_steps=5)
    before = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    trainer(60).fit(task, datamodule=dm)
    after = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    assert set(after) >= {"val/loss", "val/acc", "val/ppl"}
    assert after["val/loss"] < before["val/loss"] - 1.0
    assert after["val/acc"] > before["val/acc"]


def test_pad_id_mismatch_is_a_clear_error(tmp_path):
    dm = MaskedLMDataModule(source=write_corpus(tmp_path / "corpus", 8), cache_dir=str(tmp_path / "cache"),
                            vocab_size=200, block_size=32, batch_size=4)
    config = BertConfig(vocab_size=dm.model_vocab_size, max_seq_len=32, d_model=32, n_layer=1, n_head=2,
                        pad_token_id=3)
    with pytest.raises(ZooError, match="pad_token_id"):
        trainer(1).validate(MaskedLM(Bert(config)), datamodule=dm, verbose=False)
