"""Hugging Face `CLIPModel` checkpoints (model_type "clip") → `zoo.models.CLIP`.

Radford et al., 2021 (CLIP) with a ViT image tower (Dosovitskiy et al., 2021). Hugging Face names
the blocks `layer_norm1/2`, `fc1/fc2`, `out_proj`; the rest differs only in prefixes. Its text
pooling reads the first end-of-text token, except for configs with `eos_token_id == 2` (written
before transformers PR #24773), which keep OpenAI's rule: the position of the largest token id.

`export` applies RENAMES backwards and writes the pooling rule as that `eos_token_id` convention.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.hf import invert_activation, load_mapped, refuse
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


def export_name(ours: str) -> str:
    """A zoo CLIP weight name → Hugging Face's."""
    ours = ours.replace("text_model.transformer.norm.", "text_model.final_layer_norm.")  # before its stack's rename
    for theirs, mine in reversed(RENAMES):
        ours = ours.replace(mine, theirs)
    return ours


def _text_eos(t: CLIPTextConfig) -> int:
    """The text `eos_token_id` that makes Hugging Face pool as `t.pooling` says."""
    if t.pooling == "eos" and t.eos_token_id != 2:
        return t.eos_token_id
    if t.pooling == "argmax":
        return 2  # Hugging Face's marker for OpenAI's argmax rule
    why = ("Hugging Face pools at the first end-of-text id, or at the largest id when eos_token_id is 2"
           if t.pooling == "last" else "Hugging Face reads eos_token_id=2 as the argmax rule")
    raise refuse("clip", f"text pooling={t.pooling!r} with eos_token_id={t.eos_token_id}", why)


def export(model: CLIP) -> tuple[dict, dict]:
    """A zoo `CLIP` as a Hugging Face `CLIPModel` (config.json dict, state dict)."""
    c, t, v = model.config, model.config.text, model.config.vision
    text = {"vocab_size": c.vocab_size, "hidden_size": t.d_model, "intermediate_size": t.d_ff or 4 * t.d_model,
            "num_hidden_layers": t.n_layer, "num_attention_heads": t.n_head, "max_position_embeddings": t.max_seq_len,
            "hidden_act": invert_activation(ACTIVATIONS, t.activation, "clip"), "layer_norm_eps": t.norm_eps,
            "eos_token_id": _text_eos(t), "projection_dim": c.projection_dim, "attention_dropout": c.attn_dropout}
    vision = {"hidden_size": v.d_model, "intermediate_size": v.d_ff or 4 * v.d_model, "num_hidden_layers": v.n_layer,
              "num_attention_heads": v.n_head, "num_channels": v.channels, "image_size": v.image_size,
              "patch_size": v.patch_size, "hidden_act": invert_activation(ACTIVATIONS, v.activation, "clip"),
              "layer_norm_eps": v.norm_eps, "projection_dim": c.projection_dim, "attention_dropout": c.attn_dropout}
    cfg = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": c.projection_dim,
           "logit_scale_init_value": c.logit_scale_init, "text_config": text, "vision_config": vision}
    state = {export_name(k): v.reshape(()) if k == "logit_scale" else v for k, v in model.state_dict().items()}
    return cfg, state


# ----------------------------------------------------------------- names for adapters (zoo.adapters.peft)
def weight_names(model) -> tuple:
    """(zoo weight name → Hugging Face, Hugging Face → zoo) for this model: PEFT adapters map through it."""
    return export_name, (lambda name: rename(name.removeprefix("clip.")))


def fused_qkv(model) -> bool:
    """Whether Hugging Face fuses this model's q/k/v into one layer (GPT-2's c_attn): no."""
    return False
