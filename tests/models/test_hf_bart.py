"""Our BART loaded from tiny random Hugging Face models matches their logits (fp32, eager attention,
no dropout, encoder and decoder padding, with and without scale_embedding); triton ≡ eager."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo.errors import ZooError
from zoo.models import Bart, BartConfig

transformers = pytest.importorskip("transformers")

from tests.models.test_hf_t5 import padded, redraw, seq2seq_check  # noqa: E402


def hf_bart(**kw):
    cfg = transformers.BartConfig(vocab_size=101, d_model=32, encoder_layers=2, decoder_layers=3,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, max_position_embeddings=40, dropout=0.0, attention_dropout=0.0,
                                  activation_dropout=0.0, **kw)
    hf = redraw(transformers.BartForConditionalGeneration._from_config(cfg, attn_implementation="eager"))
    with torch.no_grad():  # a buffer, so redraw() skipped it
        hf.final_logits_bias.copy_(torch.randn(hf.final_logits_bias.shape, generator=torch.Generator().manual_seed(5)))
    return hf


@pytest.mark.parametrize("scale_embedding", [False, True])
def test_bart_parity(tmp_path, scale_embedding):
    ours = seq2seq_check(hf_bart(scale_embedding=scale_embedding), tmp_path)
    assert isinstance(ours, Bart) and ours.family == "bart"
    assert ours.lm_head.weight is ours.embed_tokens.weight
    assert ours.config.scale_embedding is scale_embedding and ours.config.n_decoder_layer == 3
    assert ours.final_logits_bias.abs().sum() > 0


def test_bart_checkpoint_keeping_only_the_head(tmp_path):
    """Some checkpoints store the shared embedding once, as lm_head.weight; it is re-tied."""
    hf = hf_bart()
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["lm_head.weight"] = state.pop("model.shared.weight")
    del state["final_logits_bias"]  # optional in Hugging Face too (zeros)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = zoo.from_hf(tmp_path)
    assert torch.equal(ours.embed_tokens.weight, hf.model.shared.weight) and ours.config.tie_embeddings
    assert ours.final_logits_bias.abs().sum() == 0


def test_bart_with_encoder_and_decoder_of_different_shapes(tmp_path):
    """Decoder heads, FFN width and depth differ from the encoder's: loads with parity (refused before)."""
    hf = redraw(transformers.BartForConditionalGeneration._from_config(transformers.BartConfig(
        vocab_size=101, d_model=32, encoder_layers=1, decoder_layers=3, encoder_attention_heads=2,
        decoder_attention_heads=8, encoder_ffn_dim=48, decoder_ffn_dim=80, max_position_embeddings=40,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0), attn_implementation="eager"))
    ours = seq2seq_check(hf, tmp_path)
    assert ours.decoder.layers[0].self_attn.n_head == 8 and ours.encoder.layers[0].self_attn.n_head == 2
    assert ours.decoder.layers[0].mlp.up_proj.out_features == 80 and len(ours.decoder.layers) == 3


def test_bart_length_limit_and_counts():
    model = Bart(BartConfig(vocab_size=50, max_seq_len=8, d_model=16, n_layer=1, n_head=2, d_ff=32))
    assert model.encoder_positions.weight.shape == (10, 16)  # two offset rows
    with pytest.raises(ValueError, match="max_seq_len"):
        model.encode(torch.zeros(1, 9, dtype=torch.long))
    embeddings = 50 * 16 + 2 * 10 * 16
    assert model.num_parameters(non_embedding=False) - model.num_parameters() == embeddings


def test_bart_triton_matches_eager(monkeypatch):
    from tests.models.test_hf_bert import count_calls

    calls = count_calls(monkeypatch, "attention", "layer_norm")
    cfg = BartConfig(vocab_size=50, max_seq_len=16, d_model=16, n_layer=1, n_head=2, d_ff=32, dropout=0.0,
                     attn_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(0)
    eager = Bart(dataclasses.replace(cfg, attn_impl="eager")).eval()
    triton = Bart(dataclasses.replace(cfg, attn_impl="triton", norm_impl="triton")).eval()
    triton.load_state_dict(eager.state_dict())
    ids, mask = padded(50, 2, 7, pad_row=1, pad=2, seed=1)
    dec, dmask = padded(50, 2, 5, pad_row=0, pad=1, seed=2)
    with torch.no_grad():
        ref = eager(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
        out = triton(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
    assert len(calls["attention"]) == 3 and len(calls["layer_norm"]) == 7  # 2 embedding norms, 2 + 3 in blocks
    assert (out - ref)[dmask.bool()].abs().max().item() <= 1e-4
