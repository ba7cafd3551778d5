"""Tiny models of every family, and one output tensor per family to compare models by."""

import pytest
import torch

from zoo.models import CLIP, GPT, Bart, BartConfig, Bert, BertConfig, CLIPConfig, GPTConfig, T5, T5Config
from zoo.models.base import CausalLMModel, ImageTextModel, MaskedLMModel, Seq2SeqModel
from zoo.models.clip import CLIPTextConfig, CLIPVisionConfig

V = 96


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "gpt":
        return GPT(GPTConfig(vocab_size=V, max_seq_len=32, d_model=64, n_layer=2, n_head=4, d_ff=128)).eval()
    if family == "bert":
        return Bert(BertConfig(vocab_size=V, max_seq_len=32, d_model=64, n_layer=2, n_head=4, d_ff=128, dropout=0,
                               attn_dropout=0)).eval()
    if family == "t5":
        return T5(T5Config(vocab_size=V, d_model=64, d_kv=16, d_ff=128, n_layer=2, n_head=4, dropout=0,
                           attn_dropout=0)).eval()
    if family == "bart":
        return Bart(BartConfig(vocab_size=V, max_seq_len=32, d_model=64, n_layer=2, n_head=4, d_ff=128, dropout=0,
                               attn_dropout=0, activation_dropout=0)).eval()
    return CLIP(CLIPConfig(vocab_size=V, projection_dim=32,
                           vision=CLIPVisionConfig(image_size=16, patch_size=8, d_model=64, n_layer=2, n_head=4, d_ff=128),
                           text=CLIPTextConfig(max_seq_len=16, d_model=64, n_layer=2, n_head=4, d_ff=128,
                                               eos_token_id=V - 1))).eval()


FAMILY_NAMES = ["gpt", "bert", "t5", "bart", "clip"]


@pytest.fixture(params=FAMILY_NAMES)
def family(request) -> str:
    return request.param


def outputs(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    """The model's main output on fixed random inputs: LM logits, or CLIP's image and text embeddings."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V - 1, (2, 12), generator=g)
    with torch.no_grad():
        if isinstance(model, CausalLMModel):
            return model(ids)
        if isinstance(model, MaskedLMModel):
            return model.mlm_logits(model.encode(ids))
        if isinstance(model, Seq2SeqModel):
            return model(ids, decoder_input_ids=ids[:, :7])
        assert isinstance(model, ImageTextModel)
        ids[:, -1] = V - 1
        pixels = torch.randn(2, 3, 16, 16, generator=g)
        return torch.cat([model.encode_image(pixels), model.encode_text(ids)], 1)
