"""BERT checkpoints (`BertForMaskedLM`, `BertForPreTraining`, model_type "bert") → `zoo.models.Bert`.

Hugging Face nests each block as attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
intermediate.dense, output.{dense,LayerNorm}; the MLM head lives under cls.predictions. Newer
checkpoints leave out the decoder weight (tied to the word embeddings) and the pooler (a masked-LM
model has none); old TensorFlow-era ones call LayerNorm parameters gamma/beta.

`export` reads the same table backwards: `BertForMaskedLM` (the pooler, when the model has one, is
kept for `BertModel`), or `BertForSequenceClassification` with a fine-tuned classifier head.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.hf import ClassifierHead, invert_activation, load_mapped, refuse
from zoo.models.bert import Bert, BertConfig

# Hugging Face activation names → ours (shared by the BERT, T5 and BART converters)
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                  "silu": "silu", "swish": "silu", "quick_gelu": "quick_gelu"}

RENAMES = (  # applied in order to each key, after the "bert." prefix is removed
    ("embeddings.word_embeddings", "embed_tokens"),
    ("embeddings.position_embeddings", "embed_positions"),
    ("embeddings.token_type_embeddings", "embed_token_types"),
    ("embeddings.LayerNorm", "embed_norm"),
    ("encoder.layer.", "encoder.layers."),
    ("attention.self.query", "self_attn.q_proj"),
    ("attention.self.key", "self_attn.k_proj"),
    ("attention.self.value", "self_attn.v_proj"),
    ("attention.output.dense", "self_attn.o_proj"),
    ("attention.output.LayerNorm", "self_attn_norm"),
    ("intermediate.dense", "mlp.up_proj"),
    ("output.dense", "mlp.down_proj"),
    ("output.LayerNorm", "mlp_norm"),
    ("pooler.dense", "pooler"),
    ("cls.predictions.transform.dense", "head_transform"),
    ("cls.predictions.transform.LayerNorm", "head_norm"),
    ("cls.predictions.decoder.weight", "lm_head.weight"),
    ("cls.predictions.bias", "lm_head.bias"),
)
SKIPPED = ("position_ids", "token_type_ids", "cls.seq_relationship", "cls.predictions.decoder.bias")


def hf_activation(name: str, family: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise ZooError(f"activation '{name}' of this {family} checkpoint is not supported; "
                       f"zoo knows {', '.join(sorted(HF_ACTIVATIONS))}")
    return HF_ACTIVATIONS[name]


def rename(key: str) -> str:
    key = key.removeprefix("bert.")
    for theirs, ours in RENAMES:
        key = key.replace(theirs, ours)
    if key.endswith(".gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith(".beta"):
        key = key[: -len("beta")] + "bias"
    return key


def bert_config(cfg: dict, state: dict) -> BertConfig:
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ZooError(f"BERT position_embedding_type '{cfg['position_embedding_type']}' is not supported; "
                       "zoo implements absolute positions")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise ZooError("decoder BERT checkpoints (is_decoder/add_cross_attention) are not supported")
    words = state["bert.embeddings.word_embeddings.weight"]
    decoder = state.get("cls.predictions.decoder.weight")
    return BertConfig(
        vocab_size=cfg["vocab_size"], max_seq_len=cfg.get("max_position_embeddings", 512),
        type_vocab_size=cfg.get("type_vocab_size", 2), d_model=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"],
        n_head=cfg["num_attention_heads"], d_ff=cfg["intermediate_size"],
        activation=hf_activation(cfg.get("hidden_act", "gelu"), "BERT"), norm_eps=cfg.get("layer_norm_eps", 1e-12),
        tie_embeddings=decoder is None or torch.equal(decoder, words),
        pooler="bert.pooler.dense.weight" in state,
        dropout=cfg.get("hidden_dropout_prob", 0.1), attn_dropout=cfg.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=cfg.get("pad_token_id") or 0, attn_impl="eager",
    )


def convert(cfg: dict, state: dict) -> Bert:
    """A Hugging Face BERT (config.json dict, state dict) as a zoo `Bert`."""
    state = {k if k.startswith(("bert.", "cls.")) else f"bert.{k}": v for k, v in state.items()}
    if "bert.embeddings.word_embeddings.weight" not in state:
        raise ZooError("this BERT checkpoint has no word embeddings; it is not a BERT model")
    if "cls.predictions.transform.dense.weight" not in state:
        raise ZooError("this BERT checkpoint has no masked-LM head (cls.predictions); "
                       "save it from BertForMaskedLM or BertForPreTraining")
    if "cls.predictions.bias" not in state and "cls.predictions.decoder.bias" in state:
        state["cls.predictions.bias"] = state["cls.predictions.decoder.bias"]
    config = bert_config(cfg, state)
    model = Bert(config)
    m = {rename(k): v for k, v in state.items() if not any(s in k for s in SKIPPED)}
    if config.tie_embeddings:
        m.pop("lm_head.weight", None)
    return load_mapped(model, m)


def export_name(ours: str) -> str:
    """A zoo BERT weight name → Hugging Face's (the RENAMES table, backwards)."""
    key = ours
    for theirs, mine in reversed(RENAMES):
        key = key.replace(mine, theirs)
    return key if key.startswith("cls.") else "bert." + key


def export(model: Bert, head: ClassifierHead | None = None) -> tuple[dict, dict]:
    """A zoo `Bert` as a Hugging Face (config.json dict, state dict): `BertForMaskedLM`, or with `head`
    `BertForSequenceClassification` (dropout and a linear layer on the pooler output, as our task)."""
    c = model.config
    cfg = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": c.vocab_size,
           "max_position_embeddings": c.max_seq_len, "type_vocab_size": c.type_vocab_size,
           "hidden_size": c.d_model, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
           "intermediate_size": c.d_ff or 4 * c.d_model, "hidden_act": invert_activation(HF_ACTIVATIONS, c.activation, "bert"),
           "layer_norm_eps": c.norm_eps, "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attn_dropout,
           "pad_token_id": c.pad_token_id, "position_embedding_type": "absolute",
           "tie_word_embeddings": c.tie_embeddings}
    state = {export_name(k): v for k, v in model.state_dict().items()
             if not (k == "lm_head.weight" and c.tie_embeddings)}
    if head is None:
        return cfg, state
    if c.pooler is False:
        raise refuse("bert", "a classifier on a model without a pooler (pooler=False)",
                     "BertForSequenceClassification reads the pooler output")
    state = {k: v for k, v in state.items() if not k.startswith("cls.")}
    state["classifier.weight"] = head.weight
    if head.bias is not None:
        state["classifier.bias"] = head.bias
    return {**cfg, **head.label_config(), "architectures": ["BertForSequenceClassification"]}, state


# ----------------------------------------------------------------- names for adapters (zoo.adapters.peft)
def weight_names(model) -> tuple:
    """(zoo weight name → Hugging Face, Hugging Face → zoo) for this model: PEFT adapters map through it."""
    return export_name, rename


def fused_qkv(model) -> bool:
    """Whether Hugging Face fuses this model's q/k/v into one layer (GPT-2's c_attn): no."""
    return False
