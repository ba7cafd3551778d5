"""BART checkpoints (`BartForConditionalGeneration`, model_type "bart") → `zoo.models.Bart`.

Names are close to ours; the table below renames the rest. The token embedding may be stored as
`model.shared`, as either stack's `embed_tokens`, or only as the tied `lm_head` (newer checkpoints
keep one copy); `final_logits_bias` may be missing (Hugging Face then uses zeros).

`export` applies the table backwards and stores the embedding once, as `model.shared`.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.hf import invert_activation, load_mapped, refuse
from zoo.hf.bert import HF_ACTIVATIONS, hf_activation
from zoo.models.bart import Bart, BartConfig

RENAMES = (  # applied in order to each key, after the "model." prefix is removed
    ("encoder.embed_positions", "encoder_positions"),
    ("decoder.embed_positions", "decoder_positions"),
    ("encoder.layernorm_embedding", "encoder_embed_norm"),
    ("decoder.layernorm_embedding", "decoder_embed_norm"),
    ("attn.out_proj", "attn.o_proj"),
    ("encoder_attn_layer_norm", "cross_attn_norm"),
    ("encoder_attn.", "cross_attn."),
    ("self_attn_layer_norm", "self_attn_norm"),
    ("fc1", "mlp.up_proj"),
    ("fc2", "mlp.down_proj"),
    ("final_layer_norm", "mlp_norm"),
)
EMBEDDINGS = ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
              "lm_head.weight")


def rename(key: str) -> str:
    key = key.removeprefix("model.")
    for theirs, ours in RENAMES:
        key = key.replace(theirs, ours)
    return key


def _check(cfg: dict) -> None:
    unsupported = [k for k in ("normalize_before", "add_final_layer_norm", "static_position_embeddings",
                               "add_bias_logits") if cfg.get(k)]
    if cfg.get("normalize_embedding") is False:
        unsupported.append("normalize_embedding=false")
    if unsupported:
        raise ZooError(f"BART variants with {', '.join(unsupported)} are not supported "
                       "(zoo implements bart-base/large)")


def bart_config(cfg: dict, shared: torch.Tensor, head) -> BartConfig:
    eos = cfg.get("eos_token_id", 2)
    return BartConfig(
        vocab_size=cfg["vocab_size"], max_seq_len=cfg.get("max_position_embeddings", 1024), d_model=cfg["d_model"],
        n_layer=cfg["encoder_layers"], n_decoder_layer=cfg["decoder_layers"], n_head=cfg["encoder_attention_heads"],
        d_ff=cfg["encoder_ffn_dim"], n_decoder_head=cfg.get("decoder_attention_heads", cfg["encoder_attention_heads"]),
        d_decoder_ff=cfg.get("decoder_ffn_dim", cfg["encoder_ffn_dim"]), activation=hf_activation(cfg.get("activation_function", "gelu"), "BART"),
        scale_embedding=bool(cfg.get("scale_embedding", False)),
        tie_embeddings=head is None or torch.equal(head, shared),
        dropout=cfg.get("dropout", 0.1), attn_dropout=cfg.get("attention_dropout", 0.0),
        activation_dropout=cfg.get("activation_dropout", 0.0),
        pad_token_id=cfg.get("pad_token_id", 1), bos_token_id=cfg.get("bos_token_id", 0),
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
        decoder_start_token_id=cfg.get("decoder_start_token_id", 2), attn_impl="eager",
    )


def convert(cfg: dict, state: dict) -> Bart:
    """A Hugging Face BART (config.json dict, state dict) as a zoo `Bart`."""
    _check(cfg)
    shared = next((state[k] for k in EMBEDDINGS if k in state), None)
    if shared is None:
        raise ZooError("this BART checkpoint has no token embedding (model.shared.weight)")
    config = bart_config(cfg, shared, state.get("lm_head.weight"))
    model = Bart(config)
    m = {"embed_tokens.weight": shared, "final_logits_bias": torch.zeros(1, config.vocab_size)}
    for key, value in state.items():
        if key in EMBEDDINGS[:3] or (key == "lm_head.weight" and config.tie_embeddings):
            continue
        m[rename(key)] = value
    return load_mapped(model, m)


def export_name(ours: str) -> str:
    """A zoo BART weight name → Hugging Face's."""
    if ours == "embed_tokens.weight":
        return "model.shared.weight"
    if ours in ("final_logits_bias", "lm_head.weight"):
        return ours
    for theirs, mine in reversed(RENAMES):
        ours = ours.replace(mine, theirs)
    return "model." + ours


def export(model: Bart) -> tuple[dict, dict]:
    """A zoo `Bart` as a Hugging Face `BartForConditionalGeneration` (config.json dict, state dict)."""
    c = model.config
    if c.norm_eps != 1e-5:
        raise refuse("bart", f"norm_eps={c.norm_eps}", "Hugging Face BART's LayerNorms use 1e-5")
    cfg = {"architectures": ["BartForConditionalGeneration"], "model_type": "bart", "vocab_size": c.vocab_size,
           "max_position_embeddings": c.max_seq_len, "d_model": c.d_model, "encoder_layers": c.n_layer,
           "decoder_layers": c.n_decoder_layer or c.n_layer, "encoder_attention_heads": c.n_head,
           "decoder_attention_heads": c.n_decoder_head or c.n_head, "encoder_ffn_dim": c.d_ff or 4 * c.d_model,
           "decoder_ffn_dim": c.d_decoder_ff or c.d_ff or 4 * c.d_model,
           "activation_function": invert_activation(HF_ACTIVATIONS, c.activation, "bart"),
           "scale_embedding": c.scale_embedding, "tie_word_embeddings": c.tie_embeddings, "dropout": c.dropout,
           "attention_dropout": c.attn_dropout, "activation_dropout": c.activation_dropout,
           "is_encoder_decoder": True, "pad_token_id": c.pad_token_id, "bos_token_id": c.bos_token_id,
           "eos_token_id": c.eos_token_id, "decoder_start_token_id": c.decoder_start_token_id,
           "forced_eos_token_id": c.eos_token_id}
    state = {export_name(k): v for k, v in model.state_dict().items()
             if not (k == "lm_head.weight" and c.tie_embeddings)}
    return cfg, state


# ----------------------------------------------------------------- names for adapters (zoo.adapters.peft)
def weight_names(model) -> tuple:
    """(zoo weight name → Hugging Face, Hugging Face → zoo) for this model: PEFT adapters map through it."""
    return export_name, rename


def fused_qkv(model) -> bool:
    """Whether Hugging Face fuses this model's q/k/v into one layer (GPT-2's c_attn): no."""
    return False
