"""Our BERT loaded from tiny random Hugging Face models matches their MLM logits, hidden states and
pooler output (fp32, eager attention, no dropout, padding and token types); triton ≡ eager."""

import dataclasses

import pytest
import torch

import zoo
from zoo.errors import ZooError
from zoo.models import Bert, BertConfig

transformers = pytest.importorskip("transformers")


def redraw(model, std=0.2, seed=0):
    """Large random weights so an activation or epsilon mistake shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def batch(vocab, B=2, T=12, pad=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    types = torch.randint(0, 2, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - pad:] = 0  # right padding on the second row
    return ids, mask, types


def hf_config(**kw):
    return transformers.BertConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=96, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, **kw)


def max_err(a, b, valid):
    return (a[valid] - b[valid]).abs().max().item()


def test_bert_mlm_parity(tmp_path):
    hf = redraw(transformers.BertForMaskedLM._from_config(hf_config(), attn_implementation="eager"))
    hf.save_pretrained(tmp_path)
    ours = zoo.from_hf(tmp_path)
    assert isinstance(ours, Bert) and ours.family == "bert"
    assert ours.lm_head.weight is ours.embed_tokens.weight  # re-tied: the checkpoint has no decoder weight
    assert ours.pooler is None  # BertForMaskedLM has no pooler
    ids, mask, types = batch(101)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        out = ours(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert out.shape == ref.shape == (2, 12, 101)
    assert max_err(out, ref, mask.bool()) <= 1e-4


def test_bert_pretraining_checkpoint_hidden_states_and_pooler(tmp_path):
    cfg = hf_config(hidden_act="gelu_new")
    hf = redraw(transformers.BertForPreTraining._from_config(cfg, attn_implementation="eager"))
    hf.save_pretrained(tmp_path)
    ours = zoo.from_hf(tmp_path)
    assert ours.config.activation == "gelu_tanh" and ours.pooler is not None
    ids, mask, types = batch(101, seed=2)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        base = hf.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
        hidden = ours.encode(ids, mask, types)
        assert max_err(ours.mlm_logits(hidden), ref.prediction_logits, mask.bool()) <= 1e-4
        assert max_err(hidden, base.last_hidden_state, mask.bool()) <= 1e-4
        assert (ours.pooled(ids, mask, types) - base.pooler_output).abs().max().item() <= 1e-4


def test_bert_checkpoint_without_mlm_head_is_refused(tmp_path):
    transformers.BertModel._from_config(hf_config()).save_pretrained(tmp_path)
    with pytest.raises(ZooError, match="masked-LM head"):
        zoo.from_hf(tmp_path)


def test_bert_config_and_counts():
    model = Bert(BertConfig(vocab_size=50, max_seq_len=16, d_model=16, n_layer=1, n_head=2))
    assert dataclasses.asdict(model.config)["vocab_size"] == 50  # JSON-serialisable, vocab at top level
    embeddings = 50 * 16 + 16 * 16 + 2 * 16
    assert model.num_parameters(non_embedding=False) - model.num_parameters() == embeddings
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def count_calls(monkeypatch, *names):
    """Wrap kernels.<name> so the test can prove the Triton path ran (not the torch fallback)."""
    import kernels

    calls = {name: [] for name in names}
    for name in names:
        def wrapper(*args, _f=getattr(kernels, name), _name=name, **kwargs):
            calls[_name].append(kwargs)
            return _f(*args, **kwargs)

        monkeypatch.setattr(kernels, name, wrapper)
    return calls


def test_bert_triton_matches_eager(monkeypatch):
    calls = count_calls(monkeypatch, "attention", "layer_norm")
    cfg = BertConfig(vocab_size=50, max_seq_len=16, d_model=16, n_layer=1, n_head=2, d_ff=32, dropout=0.0,
                     attn_dropout=0.0)
    torch.manual_seed(0)
    eager = Bert(dataclasses.replace(cfg, attn_impl="eager")).eval()
    triton = Bert(dataclasses.replace(cfg, attn_impl="triton", norm_impl="triton")).eval()
    triton.load_state_dict(eager.state_dict())
    ids, mask, types = batch(50, T=7, pad=2)
    with torch.no_grad():
        ref, out = eager(ids, mask, types), triton(ids, mask, types)
    assert len(calls["attention"]) == 1 and len(calls["layer_norm"]) == 4  # embeddings, 2 in the block, MLM head
    assert calls["attention"][0]["key_padding_mask"] is not None
    assert max_err(out, ref, mask.bool()) <= 1e-4
