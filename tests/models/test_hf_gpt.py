"""Our GPT loaded from tiny random Hugging Face models matches their logits (fp32, eager, no dropout)."""

import pytest
import torch

import zoo
from zoo.errors import ZooError

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
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - pad:] = 0  # right padding on the second row
    return ids, mask


def check(hf_model, tmp_path, atol=1e-4):
    hf_model.save_pretrained(tmp_path)
    ours = zoo.from_hf(tmp_path)
    ids, mask = batch(hf_model.config.vocab_size)
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask).logits
        out = ours(input_ids=ids, attention_mask=mask)
    valid = mask.bool()
    err = (out[valid] - ref[valid]).abs().max().item()
    assert err <= atol, f"max abs logit error {err}"
    return ours


def test_gpt2_parity(tmp_path):
    cfg = transformers.GPT2Config(vocab_size=101, n_positions=64, n_embd=48, n_layer=2, n_head=4,
                                  resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    hf = redraw(transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="eager"))
    ours = check(hf, tmp_path)
    assert ours.lm_head.weight is ours.embed_tokens.weight  # tied, as in GPT-2


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_llama_parity_gqa(tmp_path, kv_heads):
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False)
    check(redraw(transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager")), tmp_path)


def test_mistral_sliding_window_parity(tmp_path):
    cfg = transformers.MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                     sliding_window=4, tie_word_embeddings=False)
    ours = check(redraw(transformers.MistralForCausalLM._from_config(cfg, attn_implementation="eager")), tmp_path)
    assert ours.config.window == 3


def test_from_hf_errors(tmp_path):
    with pytest.raises(ZooError, match="does not exist"):
        zoo.from_hf(str(tmp_path / "nope") + "/")
    with pytest.raises(ZooError, match="config.json"):
        zoo.from_hf(tmp_path)
