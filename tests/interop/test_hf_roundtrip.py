"""HF → zoo → HF: a tiny random Hugging Face model of every family, imported with `zoo.from_hf` and
exported with `zoo.to_hf`, gives back the same safetensors (names, shapes, values, bit for bit), and
transformers' Auto class loads the export to the original logits."""

import json

import pytest
import torch

import zoo
from zoo.hf import read_state_dict

transformers = pytest.importorskip("transformers")
t = transformers


from tests.models.test_hf_t5 import redraw  # noqa: E402  (large random weights, as the import tests use)


def gpt2():
    return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4))


def gpt2_untied():
    return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                          activation_function="relu", tie_word_embeddings=False))


def llama():
    return t.LlamaForCausalLM(t.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                            tie_word_embeddings=False, max_position_embeddings=64))


def mistral():
    return t.MistralForCausalLM(t.MistralConfig(vocab_size=97, hidden_size=32, intermediate_size=48,
                                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                                sliding_window=4, max_position_embeddings=64))


def bert():
    return t.BertForMaskedLM(t.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=48, max_position_embeddings=32))


def t5():
    return t.T5ForConditionalGeneration(t.T5Config(vocab_size=101, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                                   num_heads=4))


def t5_v11():
    return t.T5ForConditionalGeneration(t.T5Config(vocab_size=101, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                                   num_decoder_layers=1, num_heads=4, feed_forward_proj="gated-gelu",
                                                   tie_word_embeddings=False))


def bart():
    return t.BartForConditionalGeneration(t.BartConfig(vocab_size=101, d_model=32, encoder_layers=2, decoder_layers=1,
                                                       encoder_attention_heads=4, decoder_attention_heads=2,
                                                       encoder_ffn_dim=48, decoder_ffn_dim=40,
                                                       max_position_embeddings=32))


def clip():
    return t.CLIPModel(t.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=98),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=16, patch_size=8), projection_dim=16))


def outputs(model, kind):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 90, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        if kind == "clip":
            out = model(input_ids=ids, pixel_values=torch.randn(2, 3, 16, 16, generator=g), attention_mask=mask)
            return out.logits_per_image
        if kind == "seq2seq":
            return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5]).logits
        return model(input_ids=ids, attention_mask=mask).logits[mask.bool()]


AUTO = {"causal": t.AutoModelForCausalLM, "masked": t.AutoModelForMaskedLM, "seq2seq": t.AutoModelForSeq2SeqLM,
        "clip": t.AutoModel}
CASES = [(gpt2, "causal"), (gpt2_untied, "causal"), (llama, "causal"), (mistral, "causal"), (bert, "masked"),
         (t5, "seq2seq"), (t5_v11, "seq2seq"), (bart, "seq2seq"), (clip, "clip")]


@pytest.mark.parametrize("build,kind", CASES, ids=[b.__name__ for b, _ in CASES])
def test_hf_to_zoo_to_hf_is_exact(tmp_path, build, kind):
    torch.manual_seed(0)
    hf = redraw(build())
    hf.save_pretrained(tmp_path / "hf")
    zoo.to_hf(zoo.from_hf(tmp_path / "hf"), tmp_path / "out")
    want, got = read_state_dict(tmp_path / "hf"), read_state_dict(tmp_path / "out")
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
    back = AUTO[kind].from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    assert type(back) is type(hf)
    err = (outputs(back, kind) - outputs(hf, kind)).abs().max().item()
    assert err <= 1e-4, f"max abs error {err}"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [type(hf).__name__]
