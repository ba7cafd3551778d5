"""T5 checkpoints (`T5ForConditionalGeneration`, v1.0 and v1.1; model_type "t5") → `zoo.models.T5`.

Hugging Face numbers the sublayers of a block: layer.0 is self-attention, then (decoder only)
layer.1 cross-attention (`EncDecAttention`), and the last is the MLP (`DenseReluDense`: wi, or
wi_0/wi_1 when gated, and wo). Only block 0 of each stack stores `relative_attention_bias`.

Tying: v1.0 ties the head to `shared` and rescales the decoder output by d_model^-½; v1.1 has its
own head and no rescaling. Older configs say so with `tie_word_embeddings`; transformers ≥ 5 always
writes `tie_word_embeddings: true` and records the rescaling as `scale_decoder_outputs`. A head
missing from the weights is re-tied to the shared embedding; one present and different is untied.

`export` numbers the sublayers back (`export_name`) and writes the relative bias to block 0.
"""

from __future__ import annotations

import re

import torch

from zoo.errors import ZooError
from zoo.hf import invert_activation, load_mapped, refuse
from zoo.hf.bert import HF_ACTIVATIONS, hf_activation
from zoo.models.t5 import T5, T5Config

BLOCK = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)")
ATTENTION = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
MLP = {"wi": "up_proj", "wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}


def feed_forward(proj: str) -> tuple[str, bool]:
    """HF `feed_forward_proj` ("relu", "gated-gelu", ...) → (our activation, gated)."""
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    if len(parts) > 2 or (len(parts) == 2 and not gated):
        raise ZooError(f"T5 feed_forward_proj '{proj}' is not supported; expected 'ACT' or 'gated-ACT'")
    if proj == "gated-gelu":  # Hugging Face maps this one to the tanh approximation (gelu_new)
        return "gelu_tanh", True
    return hf_activation(parts[-1], "T5"), gated


def rename(key: str) -> str | None:
    """Our name for a T5 weight, or None for weights with no counterpart."""
    if key in ("encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"):
        return key.replace("final_layer_norm", "norm")
    m = BLOCK.fullmatch(key)
    if m is None:
        return None
    stack, block, sub, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    roles = ("self_attn", "cross_attn", "mlp") if stack == "decoder" else ("self_attn", "mlp")
    role = roles[sub]
    if rest.startswith("layer_norm."):
        return f"{stack}.layers.{block}.{role}_norm.{rest.split('.')[-1]}"
    module, name, kind = rest.split(".")
    if name == "relative_attention_bias":
        return f"{stack}.relative_bias.relative_attention_bias.weight" if role == "self_attn" else None
    table = MLP if role == "mlp" else ATTENTION
    return f"{stack}.layers.{block}.{role}.{table[name]}.{kind}"


def shared_embedding(state: dict) -> torch.Tensor:
    for name in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        if name in state:
            return state[name]
    raise ZooError("this T5 checkpoint has no token embedding (shared.weight)")


def t5_config(cfg: dict, state: dict) -> T5Config:
    activation, gated = feed_forward(cfg.get("feed_forward_proj", "relu"))
    shared, head = shared_embedding(state), state.get("lm_head.weight")
    scale = cfg["scale_decoder_outputs"] if "scale_decoder_outputs" in cfg else cfg.get("tie_word_embeddings", True)
    eos = cfg.get("eos_token_id", 1)
    pad = cfg.get("pad_token_id")
    pad = 0 if pad is None else pad
    start = cfg.get("decoder_start_token_id")
    return T5Config(
        vocab_size=cfg["vocab_size"], d_model=cfg["d_model"], d_kv=cfg["d_kv"], d_ff=cfg["d_ff"],
        n_layer=cfg["num_layers"], n_decoder_layer=cfg.get("num_decoder_layers") or cfg["num_layers"],
        n_head=cfg["num_heads"], activation=activation, gated_mlp=gated,
        relative_num_buckets=cfg.get("relative_attention_num_buckets", 32),
        relative_max_distance=cfg.get("relative_attention_max_distance", 128),
        norm_eps=cfg.get("layer_norm_epsilon", 1e-6),
        tie_embeddings=head is None or torch.equal(head, shared), scale_decoder_outputs=bool(scale),
        dropout=cfg.get("dropout_rate", 0.1), attn_dropout=cfg.get("dropout_rate", 0.1),
        pad_token_id=pad, eos_token_id=eos[0] if isinstance(eos, list) else eos,
        decoder_start_token_id=pad if start is None else start,  # T5 starts decoding from <pad>
        init_factor=cfg.get("initializer_factor", 1.0), attn_impl="eager",
    )


def convert(cfg: dict, state: dict) -> T5:
    """A Hugging Face T5 (config.json dict, state dict) as a zoo `T5`."""
    if not any(k.startswith("decoder.") for k in state):
        raise ZooError("this T5 checkpoint has no decoder (a T5EncoderModel?); zoo loads T5ForConditionalGeneration")
    config = t5_config(cfg, state)
    model = T5(config)
    m = {"embed_tokens.weight": shared_embedding(state)}
    if not config.tie_embeddings:
        m["lm_head.weight"] = state["lm_head.weight"]
    for key, value in state.items():
        name = rename(key)
        if name is not None:
            m[name] = value
    return load_mapped(model, m)


OURS = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(self_attn|cross_attn|mlp)(_norm)?\.(?:(\w+)\.)?(weight|bias)")
MODULES = {"self_attn": "SelfAttention", "cross_attn": "EncDecAttention", "mlp": "DenseReluDense"}


def export_name(ours: str, gated: bool) -> str:
    """A zoo T5 weight name → Hugging Face's."""
    if ours == "embed_tokens.weight":
        return "shared.weight"
    if ours in ("lm_head.weight", "encoder.norm.weight", "decoder.norm.weight"):
        return ours.replace(".norm.", ".final_layer_norm.")
    if ours.endswith("relative_bias.relative_attention_bias.weight"):
        return f"{ours.split('.')[0]}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    stack, block, role, norm, name, kind = OURS.fullmatch(ours).groups()
    roles = ("self_attn", "cross_attn", "mlp") if stack == "decoder" else ("self_attn", "mlp")
    prefix = f"{stack}.block.{block}.layer.{roles.index(role)}."
    if norm:
        return f"{prefix}layer_norm.{kind}"
    table = {"up_proj": "wi_1", "gate_proj": "wi_0", "down_proj": "wo"} if gated else {"up_proj": "wi", "down_proj": "wo"}
    theirs = table[name] if role == "mlp" else {v: k for k, v in ATTENTION.items()}[name]
    return f"{prefix}{MODULES[role]}.{theirs}.{kind}"


def export(model: T5) -> tuple[dict, dict]:
    """A zoo `T5` as a Hugging Face `T5ForConditionalGeneration` (config.json dict, state dict)."""
    c = model.config
    if c.gated_mlp and c.activation == "gelu":
        raise refuse("t5", "activation='gelu' with gated_mlp=True", "Hugging Face reads 'gated-gelu' as the tanh "
                     "approximation; use activation: gelu_tanh")
    act = invert_activation(HF_ACTIVATIONS, c.activation, "t5")
    cfg = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": c.vocab_size,
           "d_model": c.d_model, "d_kv": c.d_kv, "d_ff": c.d_ff, "num_layers": c.n_layer,
           "num_decoder_layers": c.n_decoder_layer or c.n_layer, "num_heads": c.n_head,
           "feed_forward_proj": ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if c.gated_mlp else act,
           "relative_attention_num_buckets": c.relative_num_buckets,
           "relative_attention_max_distance": c.relative_max_distance, "layer_norm_epsilon": c.norm_eps,
           "tie_word_embeddings": c.tie_embeddings, "scale_decoder_outputs": model.scales_decoder_outputs,
           "dropout_rate": c.dropout, "initializer_factor": c.init_factor, "is_encoder_decoder": True,
           "pad_token_id": c.pad_token_id, "eos_token_id": c.eos_token_id,
           "decoder_start_token_id": c.decoder_start_token_id}
    state = {export_name(k, c.gated_mlp): v for k, v in model.state_dict().items()
             if not (k == "lm_head.weight" and c.tie_embeddings)}
    return cfg, state


# ----------------------------------------------------------------- names for adapters (zoo.adapters.peft)
def weight_names(model) -> tuple:
    """(zoo weight name → Hugging Face, Hugging Face → zoo) for this model: PEFT adapters map through it."""
    return (lambda name: export_name(name, model.config.gated_mlp)), rename


def fused_qkv(model) -> bool:
    """Whether Hugging Face fuses this model's q/k/v into one layer (GPT-2's c_attn): no."""
    return False
