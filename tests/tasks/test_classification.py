"""SequenceClassification: metrics on a known confusion, BERT head and T5/BART text-to-text fine-tuning,
starting from a pre-trained checkpoint."""

import json
import random

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from zoo.data import ClassificationDataModule, MaskedLMDataModule
from zoo.data.tokenizer import train_tokenizer
from zoo.errors import ZooError
from zoo.models import Bart, BartConfig, Bert, BertConfig, T5, T5Config
from zoo.tasks import MaskedLM, SequenceClassification

WORDS = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "qua", "dor", "pel"]
CUES = {"apple": "apple", "berry": "berry", "cherry": "cherry"}  # each label's text contains its name


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP spin-waiting (10× faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(steps: int, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(**{**options, **kwargs})


def texts(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(CUES)[i % 3]
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
        for _ in range(3):  # a strong cue: tiny text-to-text models learn it in a few dozen steps
            words.insert(rng.randint(0, len(words)), CUES[label])
        rows.append({"text": " ".join(words) + ".", "label": label})
    return rows


@pytest.fixture
def files(tmp_path):
    out = {}
    for split, n, seed in (("train", 96, 0), ("val", 24, 1)):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in texts(n, seed)))
        out[split] = str(path)
    return out


def tokenizer(tmp_path, kind: str, specials=None) -> str:
    corpus = [r["text"] for r in texts(200, 5)]
    path = tmp_path / f"{kind}.json"
    train_tokenizer(corpus, kind, 400 if kind == "bpe" else 120, specials).save(str(path))
    return str(path)


def test_macro_f1_and_accuracy_on_a_known_confusion():
    task = SequenceClassification(Bert(BertConfig(vocab_size=50, d_model=32, n_layer=1, n_head=2)), num_labels=3)
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 0, 1, 2, 1, 1, 0, 2, 2, 2])
    # per class: precision 2/3, 2/3, 3/4; recall 2/4, 2/3, 3/3 → F1 4/7, 2/3, 6/7
    task.val_f1(preds, target)
    task.val_acc(preds, target)
    assert task.val_f1.compute().item() == pytest.approx((4 / 7 + 2 / 3 + 6 / 7) / 3)
    assert task.val_acc.compute().item() == pytest.approx(0.7)


def test_bert_head_fine_tuning_learns_the_cue_words(tmp_path, files):
    torch.manual_seed(0)
    dm = ClassificationDataModule(train_file=files["train"], val_file=files["val"],
                                  tokenizer=tokenizer(tmp_path, "wordpiece"), batch_size=16)
    model = Bert(BertConfig(vocab_size=dm.model_vocab_size, max_seq_len=64, d_model=32, n_layer=1, n_head=2,
                            d_ff=64, dropout=0.0, attn_dropout=0.0))
    task = SequenceClassification(model, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), warmup_steps=5)
    trainer(60).fit(task, datamodule=dm)
    scores = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    assert task.classifier[1].out_features == 3
    assert scores["val/acc"] >= 0.9 and scores["val/macro_f1"] >= 0.9


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_text_to_text_fine_tuning(tmp_path, files, family):
    torch.manual_seed(0)
    if family == "t5":
        lr, steps = 5e-3, 60
        tok = tokenizer(tmp_path, "unigram")
        model_fn = lambda v: T5(T5Config(vocab_size=v, d_model=32, d_kv=8, d_ff=64, n_layer=1, n_head=4, dropout=0.0))
    else:  # BART's post-norm, std-0.02 start attends to the encoder slowly at first
        lr, steps = 3e-3, 200
        tok = tokenizer(tmp_path, "bpe", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        model_fn = lambda v: Bart(BartConfig(vocab_size=v, max_seq_len=64, d_model=64, n_layer=1, n_head=4, d_ff=128,
                                             dropout=0.0, attn_dropout=0.0, activation_dropout=0.0))
    dm = ClassificationDataModule(train_file=files["train"], val_file=files["val"], tokenizer=tok, batch_size=16)
    task = SequenceClassification(model_fn(dm.model_vocab_size), optimizer=lambda p: torch.optim.AdamW(p, lr=lr),
                                  warmup_steps=5)
    assert task.text_to_text
    trainer(steps).fit(task, datamodule=dm)
    scored = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    assert scored["val/acc"] >= 0.9
    task.predict_with = "generate"
    generated = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    # free generation may also produce a text outside the label set, so it can only score lower
    assert scored["val/acc"] - 0.15 <= generated["val/acc"] <= scored["val/acc"] + 1e-6


def test_fine_tuning_starts_from_a_pretrained_checkpoint(tmp_path, files):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "doc.txt").write_text("\n\n".join(r["text"] for r in texts(300, 7)))
    pre = MaskedLMDataModule(source=str(corpus), cache_dir=str(tmp_path / "cache"), vocab_size=150, block_size=32,
                             batch_size=8)
    config = BertConfig(vocab_size=pre.model_vocab_size, max_seq_len=64, d_model=32, n_layer=1, n_head=2, d_ff=64)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    pretraining = trainer(3, enable_checkpointing=True, callbacks=[ckpt], limit_val_batches=1)
    pretraining.fit(MaskedLM(Bert(config)), datamodule=pre)
    path = str(tmp_path / "ckpt" / "last.ckpt")
    task = SequenceClassification(Bert(config), init_from=path)
    state = torch.load(path, weights_only=True)["state_dict"]
    for name, value in task.model.state_dict().items():  # every weight is the pre-trained one
        assert torch.equal(value, state[f"model.{name}"]), name
    dm = ClassificationDataModule(train_file=files["train"], tokenizer=path, batch_size=16)  # the ckpt's tokenizer
    trainer(2, limit_val_batches=1).fit(task, datamodule=dm)
    other = ClassificationDataModule(train_file=files["train"], tokenizer=tokenizer(tmp_path, "wordpiece"))
    with pytest.raises(ZooError, match="tokenizer"):
        trainer(1).validate(SequenceClassification(Bert(config), init_from=path), datamodule=other, verbose=False)
    with pytest.raises(ZooError, match="bert model"):
        SequenceClassification(T5(T5Config(vocab_size=pre.model_vocab_size, d_model=32, d_kv=8, d_ff=64,
                                            n_layer=1, n_head=4)), init_from=path)
