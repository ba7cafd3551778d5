"""Tiny trained-looking zoo models with their tokenizers, saved the way `zoo fit` saves them, for the
export tests (building them directly keeps the tests fast; one GPT goes through `zoo fit` itself)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from zoo.data.tokenizer import train_tokenizer
from zoo.models import CLIP, GPT, Bart, BartConfig, Bert, BertConfig, CLIPConfig, GPTConfig, T5, T5Config
from zoo.models.clip import CLIPTextConfig, CLIPVisionConfig

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Ein naïver Café-Besitzer grüßt: ¡Hola! 東京へようこそ 🙂",
          "def f(x):\n    return x  *  2\t# tabs and  spaces", "Numbers 3.14159, 2^10 = 1024, and e-mail a@b.org"] * 20
AWKWARD = ["", "hello world", "  leading and trailing  ", "tabs\tand\nnewlines\n\n  runs   of    spaces",
           "naïve café — 東京 🙂 Ünïcödé", "x" * 40, "emoji 👩‍💻 joiner", "a<|endoftext|>b <pad> c",
           "[CLS] [MASK] x [SEP] [UNK]", "<s> span </s> <mask> <extra_id_0> y <unk>"]
SPECIALS = {"gpt": ("bpe", None), "bert": ("wordpiece", None), "t5": ("unigram", None),
            "bart": ("bpe", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]), "clip": ("bpe", None)}


def tokenizer(family: str):
    kind, specials = SPECIALS[family]
    return train_tokenizer(CORPUS, kind, 300 if kind == "bpe" else 200, special_tokens=specials)


def redraw(model, std=0.1, seed=0):
    """Large random weights (as a few training steps would leave them, only larger), so a wrong
    activation, epsilon or layout shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def build(family: str, tok, **overrides):
    V = tok.get_vocab_size()
    if family == "gpt":
        cfg = dict(vocab_size=V, max_seq_len=64, d_model=32, n_layer=2, n_head=4, attn_impl="eager")
        return redraw(GPT(GPTConfig(**{**cfg, **overrides})))
    if family == "bert":
        return redraw(Bert(BertConfig(vocab_size=V, max_seq_len=64, d_model=32, n_layer=2, n_head=4, d_ff=48,
                                      pad_token_id=tok.token_to_id("[PAD]"), attn_impl="eager", **overrides)))
    if family == "t5":
        return redraw(T5(T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, n_layer=2, n_head=4,
                                  pad_token_id=tok.token_to_id("<pad>"), eos_token_id=tok.token_to_id("</s>"),
                                  decoder_start_token_id=tok.token_to_id("<pad>"), attn_impl="eager", **overrides)))
    if family == "bart":
        ids = {k: tok.token_to_id(t) for k, t in (("pad_token_id", "<pad>"), ("bos_token_id", "<s>"),
                                                  ("eos_token_id", "</s>"), ("decoder_start_token_id", "</s>"))}
        return redraw(Bart(BartConfig(vocab_size=V, max_seq_len=64, d_model=32, n_layer=2, n_head=4, d_ff=48,
                                      attn_impl="eager", **ids, **overrides)))
    text = CLIPTextConfig(max_seq_len=64, d_model=32, n_layer=2, n_head=4, eos_token_id=tok.token_to_id("<|endoftext|>"))
    vision = CLIPVisionConfig(image_size=16, patch_size=8, d_model=32, n_layer=2, n_head=4)
    model = redraw(CLIP(CLIPConfig(vocab_size=V, vision=vision, text=text, projection_dim=16, attn_impl="eager")))
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    return model


def save_checkpoint(path: Path, model, tok, head=None, labels=None) -> Path:
    """A checkpoint as `zoo fit` writes it (Task.on_save_checkpoint): the task's state dict and the zoo entry."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"family": model.family, "config": asdict(model.config), "tokenizer": tok.to_str()}
    if head is not None:
        state.update({"classifier.1.weight": head.weight.detach(), "classifier.1.bias": head.bias.detach()})
        meta.update(labels=labels, num_labels=len(labels))
    torch.save({"state_dict": state, "zoo": meta, "global_step": 3}, path)
    return path
