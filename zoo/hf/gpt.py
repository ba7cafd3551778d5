"""GPT-2 and LLaMA/Mistral checkpoints → `zoo.models.GPT`.

GPT-2 stores its projections as `Conv1D` (weights transposed, q/k/v fused in `c_attn`); LLaMA and
Mistral use plain linears under names close to ours. Mistral's `sliding_window` W lets a token see
itself and the W−1 before it, which is our `window = W − 1`.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.hf import load_mapped
from zoo.models.gpt import GPT, GPTConfig

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu",
                    "silu": "silu", "quick_gelu": "quick_gelu"}


def gpt2(cfg: dict, state: dict) -> GPT:
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
        raise ZooError("GPT-2 variants with scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn are not supported")
    d = cfg["n_embd"]
    config = GPTConfig(
        vocab_size=cfg["vocab_size"], max_seq_len=cfg["n_positions"], d_model=d, n_layer=cfg["n_layer"],
        n_head=cfg["n_head"], d_ff=cfg.get("n_inner") or 4 * d,
        activation=GPT2_ACTIVATIONS[cfg.get("activation_function", "gelu_new")],
        norm_eps=cfg.get("layer_norm_epsilon", 1e-5), position="learned", bias=True,
        tie_embeddings=cfg.get("tie_word_embeddings", True), attn_impl="eager",
    )
    model = GPT(config)
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    m = {"embed_tokens.weight": state["wte.weight"], "embed_positions.weight": state["wpe.weight"],
         "decoder.norm.weight": state["ln_f.weight"], "decoder.norm.bias": state["ln_f.bias"]}
    for i in range(config.n_layer):
        h, z = f"h.{i}.", f"decoder.layers.{i}."
        q, k, v = state[h + "attn.c_attn.weight"].t().chunk(3, dim=0)  # Conv1D (in, 3·out) -> 3 × (out, in)
        qb, kb, vb = state[h + "attn.c_attn.bias"].chunk(3)
        for name, w, b in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
            m[f"{z}self_attn.{name}_proj.weight"], m[f"{z}self_attn.{name}_proj.bias"] = w, b
        m[z + "self_attn.o_proj.weight"] = state[h + "attn.c_proj.weight"].t()
        m[z + "self_attn.o_proj.bias"] = state[h + "attn.c_proj.bias"]
        m[z + "mlp.up_proj.weight"], m[z + "mlp.up_proj.bias"] = state[h + "mlp.c_fc.weight"].t(), state[h + "mlp.c_fc.bias"]
        m[z + "mlp.down_proj.weight"] = state[h + "mlp.c_proj.weight"].t()
        m[z + "mlp.down_proj.bias"] = state[h + "mlp.c_proj.bias"]
        for ours, theirs in (("self_attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            m[f"{z}{ours}.weight"], m[f"{z}{ours}.bias"] = state[f"{h}{theirs}.weight"], state[f"{h}{theirs}.bias"]
    if not config.tie_embeddings:
        m["lm_head.weight"] = state["lm_head.weight"]
    return load_mapped(model, {k: v.contiguous() for k, v in m.items()})


def _rope_theta(cfg: dict) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ZooError(f"RoPE scaling '{kind}' is not supported; zoo implements the default RoPE")
    return float(params.get("rope_theta") or cfg.get("rope_theta") or 10000.0)


def llama(cfg: dict, state: dict) -> GPT:
    if cfg.get("attention_bias", False) != cfg.get("mlp_bias", False):
        raise ZooError("checkpoints with biases in attention but not the MLP (or the reverse) are not supported")
    act = cfg.get("hidden_act", "silu")
    if act not in ("silu", "gelu", "gelu_pytorch_tanh"):
        raise ZooError(f"activation '{act}' is not supported for LLaMA-style models")
    window = cfg.get("sliding_window") if cfg.get("model_type") == "mistral" else None
    n_head = cfg["num_attention_heads"]
    config = GPTConfig(
        vocab_size=cfg["vocab_size"], max_seq_len=cfg.get("max_position_embeddings", 2048),
        d_model=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"], n_head=n_head,
        n_kv_head=cfg.get("num_key_value_heads") or n_head, head_dim=cfg.get("head_dim"),
        d_ff=cfg["intermediate_size"], activation={"gelu_pytorch_tanh": "gelu_tanh"}.get(act, act), gated_mlp=True,
        norm="rmsnorm", norm_eps=cfg.get("rms_norm_eps", 1e-6), position="rope", rope_theta=_rope_theta(cfg),
        window=window - 1 if window else None, bias=cfg.get("attention_bias", False),
        tie_embeddings=cfg.get("tie_word_embeddings", False), attn_impl="eager",
    )
    model = GPT(config)
    m: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("model.")
        name = name.replace("layers.", "decoder.layers.", 1) if name.startswith("layers.") else name
        name = name.replace("input_layernorm", "self_attn_norm").replace("post_attention_layernorm", "mlp_norm")
        name = {"norm.weight": "decoder.norm.weight"}.get(name, name)
        if "rotary_emb" in name or (name == "lm_head.weight" and config.tie_embeddings):
            continue
        m[name] = value
    return load_mapped(model, m)


def convert(cfg: dict, state: dict) -> GPT:
    """A Hugging Face GPT-2, LLaMA or Mistral (config.json dict, state dict) as a zoo `GPT`."""
    return gpt2(cfg, state) if cfg.get("model_type") == "gpt2" else llama(cfg, state)
