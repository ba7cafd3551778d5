"""Hugging Face `CLIPModel` checkpoints (model_type "clip") → `zoo.models.CLIP`.

Radford et al., 2021 (CLIP) with a ViT image tower (Dosovitskiy et al., 2021). Hugging Face names
the blocks `layer_norm1/2`, `fc1/fc2`, `out_proj`; the rest differs only in prefixes. Its text
pooling reads the first end-of-text token, except for configs with `eos_token_id == 2` (written
before transformers PR #24773), which keep OpenAI's rule: the position of the largest token id.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.hf import load_mapped
from zoo.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig

ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu", "silu": "silu"}

# Hugging Face's defaults, for keys a saved config.json leaves out.
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5, eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)

# (Hugging Face fragment, zoo fragment), applied in order to every weight name.
RENAMES = [
    ("vision_model.embeddings.patch_embedding.", "vision_model.patch_embed.proj."),
    ("vision_model.embeddings.class_embedding", "vision_model.class_embedding"),
    ("vision_model.embeddings.position_embedding.", "vision_model.positions."),
    ("vision_model.pre_layrnorm.", "vision_model.pre_norm."),
    ("vision_model.post_layernorm.", "vision_model.post_norm."),
    ("text_model.embeddings.token_embedding.", "text_model.embed_tokens."),
    ("text_model.embeddings.position_embedding.", "text_model.positions."),
    ("text_model.final_layer_norm.", "text_model.transformer.norm."),
    ("text_model.encoder.", "text_model.transformer."),
    (".self_attn.out_proj.", ".self_attn.o_proj."),
    (".layer_norm1.", ".self_attn_norm."),
    (".layer_norm2.", ".mlp_norm."),
    (".mlp.fc1.", ".mlp.up_proj."),
    (".mlp.fc2.", ".mlp.down_proj."),
]


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ZooError(f"CLIP activation '{name}' is not supported; zoo knows {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def _square(value, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ZooError(f"non-square CLIP {what} {value} is not supported")
        value = value[0]
    return int(value)


def clip_config(cfg: dict) -> CLIPConfig:
    """Our `CLIPConfig` from a Hugging Face CLIP config.json dict."""
    t = {**TEXT_DEFAULTS, **(cfg.get("text_config") or {})}
    v = {**VISION_DEFAULTS, **(cfg.get("vision_config") or {})}
    eos = t["eos_token_id"]
    if not isinstance(eos, int):
        raise ZooError(f"text eos_token_id {eos!r} is not a single id; zoo pools CLIP text at one end-of-text id")
    text = CLIPTextConfig(
        max_seq_len=t["max_position_embeddings"], d_model=t["hidden_size"], n_layer=t["num_hidden_layers"],
        n_head=t["num_attention_heads"], d_ff=t["intermediate_size"], activation=_activation(t["hidden_act"]),
        norm_eps=t["layer_norm_eps"], pooling="argmax" if eos == 2 else "eos", eos_token_id=eos,
    )
    vision = CLIPVisionConfig(
        image_size=_square(v["image_size"], "image_size"), patch_size=_square(v["patch_size"], "patch_size"),
        channels=v["num_channels"], d_model=v["hidden_size"], n_layer=v["num_hidden_layers"],
        n_head=v["num_attention_heads"], d_ff=v["intermediate_size"], activation=_activation(v["hidden_act"]),
        norm_eps=v["layer_norm_eps"],
    )
    return CLIPConfig(vocab_size=t["vocab_size"], vision=vision, text=text,
                      projection_dim=cfg.get("projection_dim", 512), attn_impl="eager")


def rename(name: str) -> str:
    """A Hugging Face CLIP weight name → ours."""
    for theirs, ours in RENAMES:
        name = name.replace(theirs, ours)
    return name


def convert(cfg: dict, state: dict) -> CLIP:
    """A Hugging Face CLIP (config.json dict, state dict) as a zoo `CLIP`."""
    model = CLIP(clip_config(cfg))
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):  # index buffers in old checkpoints
            continue
        mapped[rename(key.removeprefix("clip."))] = value.contiguous()
    return load_mapped(model, mapped)
