"""Our CLIP loaded from tiny random Hugging Face `CLIPModel`s matches their outputs (fp32, eager)."""

import math

import pytest
import torch

import zoo
from zoo.families import FAMILIES
from zoo.models import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig

transformers = pytest.importorskip("transformers")


def redraw(model, std=0.2, seed=0):
    """Large random weights so an activation, epsilon or pooling mistake shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def hf_clip(eos_token_id: int, act: str):
    text = dict(vocab_size=99, hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, hidden_act=act, eos_token_id=eos_token_id, pad_token_id=1,
                bos_token_id=0)
    vision = dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, hidden_act=act)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    return redraw(transformers.CLIPModel._from_config(cfg, attn_implementation="eager"))


def captions(eos_token_id: int, vocab: int = 99, B: int = 3, T: int = 11, seed: int = 1):
    """Captions of different lengths, each ending in its end-of-text token and right-padded. With
    the current rule, padding reuses the end-of-text id (as OpenAI's tokenizer does), so only
    "the first end-of-text" is right; with the legacy eos_token_id == 2 rule, the end-of-text
    token is the largest id (as in OpenAI's vocabulary) and padding is id 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab - 1, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    end = vocab - 1 if eos_token_id == 2 else eos_token_id
    for row, length in enumerate([T, T - 4, 5][:B]):
        ids[row, length - 1] = end
        ids[row, length:] = 1 if eos_token_id == 2 else eos_token_id
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("eos_token_id, act", [(50, "quick_gelu"), (2, "gelu")])
def test_clip_parity(tmp_path, eos_token_id, act):
    hf = hf_clip(eos_token_id, act)
    hf.save_pretrained(tmp_path)
    ours = zoo.from_hf(tmp_path)
    assert isinstance(ours, CLIP) and ours.family == "clip"
    assert ours.config.text.pooling == ("argmax" if eos_token_id == 2 else "eos")
    ids, mask = captions(eos_token_id)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        out = ours(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
        err = (getattr(out, name) - getattr(ref, name)).abs().max().item()
        assert err <= 1e-4, f"{name}: max abs error {err}"
    assert torch.allclose(ours.encode_text(ids, mask), out.text_embeds)
    assert torch.allclose(ours.encode_image(pixels), out.image_embeds)
    assert out.logits_per_image.shape == (2, 3)


def test_config_round_trips_through_dicts():
    """Checkpoints rebuild the model with ConfigCls(**asdict(config)): nested dicts must work."""
    from dataclasses import asdict

    cfg = CLIPConfig(vocab_size=50, projection_dim=8,
                     vision=CLIPVisionConfig(image_size=16, patch_size=4, d_model=16, n_layer=1, n_head=2),
                     text=CLIPTextConfig(max_seq_len=8, d_model=16, n_layer=1, n_head=2, eos_token_id=0))
    model_cls, config_cls = FAMILIES["clip"].model, FAMILIES["clip"].config
    again = config_cls(**asdict(cfg))
    assert again == cfg and isinstance(again.vision, CLIPVisionConfig)
    model = model_cls(again)
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert model.visual_projection.bias is None and model.text_projection.bias is None
    out = model(pixel_values=torch.randn(2, 3, 16, 16), input_ids=torch.tensor([[5, 6, 0], [7, 0, 1]]),
                attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out.logits_per_text, out.logits_per_image.t())


def test_text_pooling_rules():
    cfg = CLIPConfig(vocab_size=50, projection_dim=8,
                     vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=8, n_layer=1, n_head=2),
                     text=CLIPTextConfig(max_seq_len=8, d_model=8, n_layer=1, n_head=2, eos_token_id=3))
    tower = CLIP(cfg).text_model
    ids = torch.tensor([[9, 3, 3, 3], [9, 8, 49, 3]])  # padding reuses the end-of-text id in row 0
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert tower.pool_index(ids, mask).tolist() == [1, 3]
    tower.pooling = "argmax"
    assert tower.pool_index(ids, mask).tolist() == [0, 2]
    tower.pooling = "last"
    assert tower.pool_index(ids, mask).tolist() == [1, 3]
    assert tower.pool_index(ids, None).tolist() == [3, 3]
