"""GPT-2 and LLaMA/Mistral checkpoints → `zoo.models.GPT`.

GPT-2 stores its projections as `Conv1D` (weights transposed, q/k/v fused in `c_attn`); LLaMA and
Mistral use plain linears under names close to ours. Mistral's `sliding_window` W lets a token see
itself and the W−1 before it, which is our `window = W − 1`.

`export` is the inverse: a zoo `GPT` whose configuration one of these architectures expresses goes
out as GPT-2 (learned positions, LayerNorm, plain MLP, biases) or LLaMA/Mistral (RoPE, RMSNorm,
gated MLP); anything else (ALiBi, sinusoidal positions, mixed choices) is refused in one line.
"""

from __future__ import annotations

import torch

from zoo.errors import ZooError
from zoo.hf import ClassifierHead, invert_activation, load_mapped, refuse
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


# ----------------------------------------------------------------------------------------- export
def _gpt2_refusals(c: GPTConfig) -> list[str]:
    """The settings that keep a learned-position GPT from being a GPT-2."""
    wrong = [f"{k}={getattr(c, k)!r}" for k, want in (("norm", "layernorm"), ("gated_mlp", False), ("bias", True),
                                                       ("window", None)) if getattr(c, k) != want]
    if (c.n_kv_head or c.n_head) != c.n_head:
        wrong.append(f"n_kv_head={c.n_kv_head}")
    if c.head_dim is not None and c.head_dim * c.n_head != c.d_model:
        wrong.append(f"head_dim={c.head_dim}")
    return wrong


def _llama_refusals(c: GPTConfig) -> list[str]:
    wrong = [f"{k}={getattr(c, k)!r}" for k, want in (("norm", "rmsnorm"), ("gated_mlp", True)) if getattr(c, k) != want]
    if c.activation not in ("silu", "gelu", "gelu_tanh"):
        wrong.append(f"activation={c.activation!r}")
    if c.window is not None and c.bias:
        wrong.append("window with bias=True")  # Mistral's projections have no biases
    return wrong


def export_gpt2(model: GPT) -> tuple[dict, dict]:
    c = model.config
    if wrong := _gpt2_refusals(c):
        raise refuse("gpt", ", ".join(wrong), "GPT-2, the architecture of learned positions, has LayerNorm, a plain "
                     "MLP, biases and full multi-head attention")
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
           "n_positions": c.max_seq_len, "n_embd": c.d_model, "n_layer": c.n_layer, "n_head": c.n_head,
           "n_inner": c.d_ff, "activation_function": invert_activation(GPT2_ACTIVATIONS, c.activation, "gpt2"),
           "layer_norm_epsilon": c.norm_eps, "tie_word_embeddings": c.tie_embeddings,
           "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attn_dropout}
    z = {k: v for k, v in model.state_dict().items()}
    s = {"transformer.wte.weight": z["embed_tokens.weight"], "transformer.wpe.weight": z["embed_positions.weight"],
         "transformer.ln_f.weight": z["decoder.norm.weight"], "transformer.ln_f.bias": z["decoder.norm.bias"]}
    for i in range(c.n_layer):
        h, p = f"transformer.h.{i}.", f"decoder.layers.{i}."
        a = p + "self_attn."
        s[h + "attn.c_attn.weight"] = torch.cat([z[f"{a}{n}_proj.weight"] for n in "qkv"]).t()  # -> Conv1D (in, 3·out)
        s[h + "attn.c_attn.bias"] = torch.cat([z[f"{a}{n}_proj.bias"] for n in "qkv"])
        s[h + "attn.c_proj.weight"], s[h + "attn.c_proj.bias"] = z[a + "o_proj.weight"].t(), z[a + "o_proj.bias"]
        s[h + "mlp.c_fc.weight"], s[h + "mlp.c_fc.bias"] = z[p + "mlp.up_proj.weight"].t(), z[p + "mlp.up_proj.bias"]
        s[h + "mlp.c_proj.weight"] = z[p + "mlp.down_proj.weight"].t()
        s[h + "mlp.c_proj.bias"] = z[p + "mlp.down_proj.bias"]
        for ours, theirs in (("self_attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            s[f"{h}{theirs}.weight"], s[f"{h}{theirs}.bias"] = z[f"{p}{ours}.weight"], z[f"{p}{ours}.bias"]
    if not c.tie_embeddings:
        s["lm_head.weight"] = z["lm_head.weight"]
    return cfg, s


def export_llama(model: GPT) -> tuple[dict, dict]:
    c = model.config
    if wrong := _llama_refusals(c):
        raise refuse("gpt", ", ".join(wrong), "LLaMA/Mistral, the architecture of RoPE, has RMSNorm, a gated "
                     "silu/gelu MLP, and no biases when it slides a window")
    mistral = c.window is not None
    cfg = {"architectures": ["MistralForCausalLM" if mistral else "LlamaForCausalLM"],
           "model_type": "mistral" if mistral else "llama", "vocab_size": c.vocab_size,
           "max_position_embeddings": c.max_seq_len, "hidden_size": c.d_model, "num_hidden_layers": c.n_layer,
           "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head or c.n_head,
           "head_dim": c.head_dim or c.d_model // c.n_head, "intermediate_size": c.d_ff or 4 * c.d_model,
           "hidden_act": {"gelu_tanh": "gelu_pytorch_tanh"}.get(c.activation, c.activation),
           "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
           "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
           "tie_word_embeddings": c.tie_embeddings, "attention_dropout": c.attn_dropout}
    if mistral:
        cfg["sliding_window"] = c.window + 1
    else:
        cfg["attention_bias"] = cfg["mlp_bias"] = c.bias
    s = {}
    for name, value in model.state_dict().items():
        if name == "lm_head.weight":
            if not c.tie_embeddings:
                s[name] = value
            continue
        name = {"decoder.norm.weight": "norm.weight"}.get(name, name).replace("decoder.layers.", "layers.", 1)
        name = name.replace("self_attn_norm", "input_layernorm").replace("mlp_norm", "post_attention_layernorm")
        s["model." + name] = value
    return cfg, s


def export(model: GPT, head: ClassifierHead | None = None) -> tuple[dict, dict]:
    """A zoo `GPT` as a Hugging Face (config.json dict, state dict): GPT-2 with learned positions,
    LLaMA or Mistral (with a window) with RoPE; with `head`, the `...ForSequenceClassification`."""
    position = model.config.position
    if position not in ("learned", "rope"):
        raise refuse("gpt", f"position={position!r}", "Hugging Face GPT-2 has learned positions and "
                     "LLaMA/Mistral RoPE; retrain with position: learned or rope")
    cfg, state = export_gpt2(model) if position == "learned" else export_llama(model)
    return (cfg, state) if head is None else _with_classifier(model, cfg, state, head)


def _with_classifier(model: GPT, cfg: dict, state: dict, head: ClassifierHead) -> tuple[dict, dict]:
    """`GPT2ForSequenceClassification` / `LlamaForSequenceClassification`: a bias-free `score` layer on the
    last non-padding token. Our classifier's bias b is folded into GPT-2's final LayerNorm bias β as
    β + δ with W·δ = b (least squares: exact when W has full row rank, i.e. labels ≤ width and independent
    rows); this shifts the exported hidden states by δ, which only the classifier reads. RMSNorm has no
    bias to fold into, so a LLaMA-style classifier with a non-zero bias is refused."""
    kind = cfg["architectures"][0].replace("ForCausalLM", "").replace("LMHeadModel", "")
    state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    bias = head.bias if head.bias is not None else torch.zeros(head.weight.shape[0])
    if bool(bias.abs().max() > 0):
        if kind != "GPT2":
            raise refuse("gpt", "a classifier with a bias on an RMSNorm (LLaMA-style) model",
                         f"{kind}ForSequenceClassification's score layer has no bias, and RMSNorm none to fold it into")
        w = head.weight.double()
        delta = torch.linalg.lstsq(w, bias.double()[:, None]).solution[:, 0]  # (C,)
        if not torch.allclose(w @ delta, bias.double(), atol=1e-6):
            raise refuse("gpt", "a classifier bias outside the span of its weights",
                         "GPT2ForSequenceClassification's score layer has no bias to hold it")
        ln = state["transformer.ln_f.bias"]
        state["transformer.ln_f.bias"] = (ln.double() + delta).to(ln.dtype)
    state["score.weight"] = head.weight
    return {**cfg, **head.label_config(), "architectures": [f"{kind}ForSequenceClassification"]}, state


# ----------------------------------------------------------------- names for adapters (zoo.adapters.peft)
def _llama_from_hf(name: str) -> str:
    name = name.removeprefix("model.")
    return name.replace("layers.", "decoder.layers.", 1) if name.startswith("layers.") else name


def weight_names(model) -> tuple:
    """(zoo weight name → Hugging Face, Hugging Face → zoo) for a LLaMA-style export (GPT-2's fused
    c_attn is mapped by `zoo.adapters.peft` itself: see `fused_qkv`)."""
    return (lambda name: "model." + name.replace("decoder.layers.", "layers.", 1)), _llama_from_hf


def fused_qkv(model: GPT) -> bool:
    """Whether the export fuses q/k/v into one layer: GPT-2 style (learned positions) does, as c_attn."""
    return model.config.position == "learned"
