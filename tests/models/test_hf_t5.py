"""Our T5 (v1.0 and v1.1) loaded from tiny random Hugging Face models matches their logits (fp32,
eager attention, no dropout, encoder and decoder padding); triton ≡ eager through the kernels."""

import dataclasses
import json
from dataclasses import asdict

import pytest
import torch
from torch import nn

import zoo
from zoo.hf.t5 import t5_config
from zoo.models import T5, T5Config

transformers = pytest.importorskip("transformers")


def redraw(model, std=0.2, seed=0):
    """Large random weights so an activation or epsilon mistake shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def padded(vocab, B, T, pad_row, pad, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[pad_row, T - pad:] = 0
    return ids, mask


def seq2seq_check(hf_model, tmp_path, atol=1e-4):
    """Logits of ours vs HF at every non-padded decoder position, with both sides padded."""
    hf_model.save_pretrained(tmp_path)
    ours = zoo.from_hf(tmp_path)
    V = hf_model.config.vocab_size
    ids, mask = padded(V, 2, 12, pad_row=1, pad=3, seed=1)
    dec, dmask = padded(V, 2, 9, pad_row=0, pad=2, seed=2)
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask).logits
        out = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
    assert out.shape == ref.shape == (2, 9, V)
    valid = dmask.bool()
    err = (out[valid] - ref[valid]).abs().max().item()
    assert err <= atol, f"max abs logit error {err}"
    return ours


def hf_t5(feed_forward_proj, **kw):
    # d_kv·heads (48) ≠ d_model (32), more decoder than encoder layers, few buckets so distant ones are shared
    cfg = transformers.T5Config(vocab_size=101, d_model=32, d_kv=12, d_ff=64, num_layers=2, num_decoder_layers=3,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                dropout_rate=0.0, feed_forward_proj=feed_forward_proj, decoder_start_token_id=0, **kw)
    return transformers.T5ForConditionalGeneration._from_config(cfg, attn_implementation="eager")


def test_t5_v1_0_parity(tmp_path):
    ours = seq2seq_check(redraw(hf_t5("relu")), tmp_path)
    assert isinstance(ours, T5) and ours.family == "t5"
    assert ours.lm_head.weight is ours.embed_tokens.weight  # re-tied: transformers 5 saves no lm_head
    assert ours.scales_decoder_outputs and ours.config.activation == "relu" and not ours.config.gated_mlp
    assert ours.config.d_kv == 12 and ours.config.n_decoder_layer == 3


def test_t5_v1_1_parity(tmp_path):
    hf = hf_t5("gated-gelu", tie_word_embeddings=False)
    hf.lm_head.weight = nn.Parameter(hf.shared.weight.detach().clone())  # v1.1 has its own head
    ours = seq2seq_check(redraw(hf), tmp_path)
    assert not ours.config.tie_embeddings and not ours.scales_decoder_outputs
    assert ours.config.activation == "gelu_tanh" and ours.config.gated_mlp


def test_t5_config_old_style_untied_means_unscaled(tmp_path):
    """Checkpoints written before transformers 5 say `tie_word_embeddings: false` and nothing else."""
    hf = hf_t5("gated-gelu")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("scale_decoder_outputs", None)
    cfg["tie_word_embeddings"] = False
    state = {"shared.weight": torch.zeros(101, 32), "lm_head.weight": torch.ones(101, 32)}
    config = t5_config(cfg, state)
    assert config.scale_decoder_outputs is False and config.tie_embeddings is False


def test_t5_num_parameters_and_config():
    model = T5(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, n_layer=1, n_head=2, tie_embeddings=False))
    assert model.num_parameters(non_embedding=False) - model.num_parameters() == 2 * 50 * 16
    assert json.loads(json.dumps(asdict(model.config)))["vocab_size"] == 50


def test_t5_triton_matches_eager(monkeypatch):
    from tests.models.test_hf_bert import count_calls

    calls = count_calls(monkeypatch, "attention", "rms_norm")
    cfg = T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, n_layer=1, n_head=2, relative_num_buckets=8,
                   relative_max_distance=16, activation="gelu_tanh", gated_mlp=True, dropout=0.0, attn_dropout=0.0)
    torch.manual_seed(0)
    eager = T5(dataclasses.replace(cfg, attn_impl="eager")).eval()
    triton = T5(dataclasses.replace(cfg, attn_impl="triton", norm_impl="triton")).eval()
    triton.load_state_dict(eager.state_dict())
    ids, mask = padded(50, 2, 7, pad_row=1, pad=2, seed=1)
    dec, dmask = padded(50, 2, 5, pad_row=0, pad=1, seed=2)
    with torch.no_grad():
        ref = eager(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
        out = triton(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
    assert len(calls["attention"]) == 3 and len(calls["rms_norm"]) == 7  # enc self, dec self + cross
    assert sum(kw.get("t5_bias") is not None for kw in calls["attention"]) == 2  # in-kernel bucket path
    assert (out - ref)[dmask.bool()].abs().max().item() <= 1e-4
