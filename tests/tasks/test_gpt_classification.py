"""SequenceClassification on a decoder-only GPT: the classifier reads the last real token's hidden
state, which must be the model's own final hidden state and must ignore right padding."""

import json

import pytest
import torch

from tests.tasks.test_classification import texts, tokenizer, trainer
from zoo.data import ClassificationDataModule
from zoo.errors import ZooError
from zoo.models import GPT, Bert, BertConfig, GPTConfig, T5, T5Config
from zoo.tasks import SequenceClassification


def tiny_gpt(vocab: int = 50, **overrides) -> GPT:
    config = dict(vocab_size=vocab, max_seq_len=64, d_model=32, n_layer=2, n_head=2, dropout=0.0)
    return GPT(GPTConfig(**{**config, **overrides})).eval()


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_hidden_states_are_the_models_own(position):
    # the LM head applied to them must give GPT.forward's logits exactly
    torch.manual_seed(0)
    model = tiny_gpt(position=position)
    ids = torch.randint(0, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    torch.testing.assert_close(model.lm_head(model.hidden_states(ids, mask)), model(ids, attention_mask=mask))


def test_last_token_features_ignore_right_padding():
    torch.manual_seed(0)
    model = tiny_gpt()
    short, long = torch.randint(1, 50, (1, 4)), torch.randint(1, 50, (1, 7))
    padded = torch.cat([torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1), long])  # (2, 7)
    mask = torch.tensor([[1] * 4 + [0] * 3, [1] * 7])
    batch = model.features(padded, mask)  # (2, C)
    alone = [model.hidden_states(x)[0, -1] for x in (short, long)]
    torch.testing.assert_close(batch, torch.stack(alone), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.features(long), alone[1][None])  # no mask: the last position


def test_gpt_head_fine_tuning_learns_the_cue_words(tmp_path):
    files = {}
    for split, n, seed in (("train", 96, 0), ("val", 24, 1)):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in texts(n, seed)))
    torch.manual_seed(0)
    dm = ClassificationDataModule(train_file=str(files["train"]), val_file=str(files["val"]),
                                  tokenizer=tokenizer(tmp_path, "bpe"), batch_size=16)
    task = SequenceClassification(tiny_gpt(dm.model_vocab_size).train(),
                                  optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), warmup_steps=5)
    assert not task.text_to_text  # mode auto: a GPT gets the linear head on its last token's features
    trainer(60).fit(task, datamodule=dm)
    scores = trainer(1).validate(task, datamodule=dm, verbose=False)[0]
    assert task.classifier[1].in_features == 32 and task.classifier[1].out_features == 3
    assert scores["val/acc"] >= 0.9 and scores["val/macro_f1"] >= 0.9


def test_modes_are_checked_against_the_models_capabilities():
    """text_to_text needs seq2seq, head needs features: a one-line ZooError from the typed contract."""
    bert = Bert(BertConfig(vocab_size=50, d_model=32, n_layer=1, n_head=4))
    with pytest.raises(ZooError, match="classification in mode text_to_text needs a model with seq2seq; a bert"):
        SequenceClassification(bert, mode="text_to_text")
    t5 = T5(T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, n_layer=1, n_head=4))
    assert SequenceClassification(t5, mode="head").model.feature_dim == 32  # mean-pooled encoder features
    assert SequenceClassification(t5).text_to_text  # auto: encoder-decoders answer with the label's name
