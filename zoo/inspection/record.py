"""What `zoo inspect` records of one forward pass: forward hooks on every module, and on each
attention's `ScaledDotProduct` the Q, K, V it was given, from which the scores and weights are
recomputed by the textbook formula (the eager backend's); and each family's pass (its input text
made into tokens, and the predictions read off the outputs). Nothing in `zoo.blocks` knows."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from zoo.blocks import Attention, ScaledDotProduct, set_attention_impl
from zoo.blocks.attention import score_bias, visibility_mask
from zoo.errors import ZooError

MASK_TOKENS = ("[MASK]", "<mask>")


@dataclass
class AttentionRecord:
    """What one attention module computed (eager path)."""

    q: torch.Tensor  # (B, H, Sq, D), after RoPE
    k: torch.Tensor  # (B, Hkv, Sk, D)
    v: torch.Tensor  # (B, Hkv, Sk, D)
    scores: torch.Tensor  # (B, H, Sq, Sk): scale·QKᵀ + bias, masked keys -inf
    weights: torch.Tensor  # (B, H, Sq, Sk): softmax of the scores


def textbook_scores(core: ScaledDotProduct, q, k, v, key_padding_mask=None, bias=None,
                    segment_ids=None) -> AttentionRecord:
    """Scores scale·QKᵀ + bias with masked keys at -inf, and their softmax, for what `core` was given."""
    (B, H, Sq, D), Hkv, Sk = q.shape, k.shape[1], k.shape[2]
    scale = D**-0.5 if core.scale is None else core.scale
    kk, vv = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    scores = torch.matmul(q, kk.transpose(-2, -1)).float() * scale  # (B, H, Sq, Sk)
    add = score_bias(bias, Sq, Sk, q.device)
    if add is not None:
        scores = scores + add
    mask = visibility_mask(Sq, Sk, core.causal, core.window, key_padding_mask, q.device, segment_ids)
    if mask is not None:
        mask = mask | ~mask.any(-1, keepdim=True)  # a row with no visible key stays finite, as attend does
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).to(q.dtype)
    return AttentionRecord(q.detach(), k.detach(), v.detach(), scores.detach(), weights.detach())


class Recording:
    """The first input and output of every named module during one forward pass, and each
    attention's internals. Use `with Recording(model).active(): model(...)`: for that pass the
    attentions run their eager backend, so the outputs are exactly those of the printed weights."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, Any] = {}
        self.attention: dict[str, AttentionRecord] = {}

    def _hook(self, name: str):
        def hook(module, args, output):
            if args and torch.is_tensor(args[0]):
                self.inputs.setdefault(name, args[0].detach())
            self.outputs.setdefault(name, output.detach() if torch.is_tensor(output) else output)
        return hook

    def _scores_hook(self, name: str):
        def hook(core, args, kwargs, output):
            if name not in self.attention:
                self.attention[name] = textbook_scores(core, *args, **kwargs)
        return hook

    @contextmanager
    def active(self):
        handles = []
        saved = {m: m.impl for m in self.model.modules() if isinstance(m, ScaledDotProduct)}
        for name, module in self.model.named_modules():
            if name:
                handles.append(module.register_forward_hook(self._hook(name)))
            if isinstance(module, Attention):
                handles.append(module.core.register_forward_hook(self._scores_hook(name), with_kwargs=True))
        set_attention_impl(self.model, "eager")
        try:
            yield self
        finally:
            for module, impl in saved.items():
                module.impl = impl
            for h in handles:
                h.remove()


@dataclass
class Pass:
    """One family's forward pass: token labels per stack, the call, and what it predicts."""

    labels: dict[str, list[str]]  # stack name → labels of its positions
    ids: dict[str, list[int]]  # stack name → token ids (empty for image patches)
    run: Callable[[], Any]
    predict: Callable[[Any, int], list[tuple[str, list[tuple]]]]  # output, k → [(heading, rows)]
    notes: list[str]


# ----------------------------------------------------------------------------- the families' passes
def _encode(tok, text: str, special: bool = True) -> list[int]:
    return list(tok.encode(text, add_special_tokens=special).ids)


def _labels(tok, ids: list[int]) -> list[str]:
    return [tok.id_to_token(i) or f"<{i}>" for i in ids]


def _check_length(n: int, limit: Optional[int], what: str) -> None:
    if limit is not None and n > limit:
        raise ZooError(f"{what} is {n} tokens but the model's context holds {limit}; shorten it")


def _top_k(logits: torch.Tensor, k: int, tok) -> list[tuple]:
    """(rank, id, token, probability, logit) of the k most likely ids of one (V,) logit row."""
    probs = torch.softmax(logits.float(), dim=-1)
    top = probs.topk(min(k, probs.numel()))
    return [(r + 1, int(i), repr(tok.id_to_token(int(i))), float(p), float(logits[i]))
            for r, (p, i) in enumerate(zip(top.values, top.indices))]


def gpt_pass(net, tok, text, decoder_text, image) -> Pass:
    ids = _encode(tok, text)
    c = net.config
    _check_length(len(ids), c.max_seq_len if c.position in ("learned", "sinusoidal") else None, "--text")
    x, labels = torch.tensor([ids]), _labels(tok, ids)
    predict = lambda logits, k: [(f"next token after {labels[-1]!r}", _top_k(logits[0, -1], k, tok))]  # noqa: E731
    return Pass({"decoder": labels}, {"decoder": ids}, lambda: net(x), predict, [])


def bert_pass(net, tok, text, decoder_text, image) -> Pass:
    mask_tok = next((t for t in MASK_TOKENS if tok.token_to_id(t) is not None), None)
    if mask_tok is None:
        raise ZooError(f"the tokenizer has no mask token ({' or '.join(MASK_TOKENS)}) for BERT to fill in")
    ids = _encode(tok, text)
    _check_length(len(ids), net.config.max_seq_len, "--text")
    where = [i for i, t in enumerate(ids) if t == tok.token_to_id(mask_tok)]
    if not where:
        raise ZooError(f"--text has no {mask_tok} token for BERT to fill in; put one where a word is missing, "
                       f"e.g. --text \"The capital of France is {mask_tok}.\"")
    x, labels = torch.tensor([ids]), _labels(tok, ids)
    predict = lambda logits, k: [(f"masked position {p}", _top_k(logits[0, p], k, tok)) for p in where]  # noqa: E731
    return Pass({"encoder": labels}, {"encoder": ids}, lambda: net(x), predict, [])


def seq2seq_pass(net, tok, text, decoder_text, image) -> Pass:
    c, limit = net.config, getattr(net.config, "max_seq_len", None)
    ids = _encode(tok, text)
    dec = [c.decoder_start_token_id] + (_encode(tok, decoder_text, special=False) if decoder_text else [])
    _check_length(len(ids), limit, "--text")
    _check_length(len(dec), limit, "the decoder input (start token + --decoder_text)")
    x, d = torch.tensor([ids]), torch.tensor([dec])
    labels = {"encoder": _labels(tok, ids), "decoder": _labels(tok, dec)}
    heading = f"next decoder token after {labels['decoder'][-1]!r}"
    predict = lambda logits, k: [(heading, _top_k(logits[0, -1], k, tok))]  # noqa: E731
    notes = [f"the encoder reads --text; the decoder starts from id {c.decoder_start_token_id}"
             + (" and continues with --decoder_text" if decoder_text else "")]
    return Pass(labels, {"encoder": ids, "decoder": dec}, lambda: net(input_ids=x, decoder_input_ids=d),
                predict, notes)


def _clip_image(image: Optional[str], size: int) -> tuple[torch.Tensor, str]:
    """(1, 3, S, S) normalised pixels and a description, from a file or `digits:<index>`."""
    if not image:
        raise ZooError("CLIP needs an image: pass --image photo.png or --image digits:0 (scikit-learn's digits)")
    if image.startswith("digits:"):
        from zoo.data.images import digits

        pixels, labels = digits(size)
        try:
            index = int(image.split(":", 1)[1])
            return pixels[index][None], f"{image} (a handwritten {int(labels[index])})"
        except (ValueError, IndexError):
            raise ZooError(f"--image {image}: write digits:<index> with 0 <= index < {len(labels)}") from None
    from zoo.data.images import load_image

    if not Path(image).is_file():
        raise ZooError(f"image '{image}' does not exist; pass an image file or digits:<index>")
    return load_image(Path(image), size)[None], image


def clip_pass(net, tok, text, decoder_text, image) -> Pass:
    c = net.config
    captions = [s.strip() for s in text.split("|") if s.strip()]
    if not captions:
        raise ZooError('--text holds no caption; give candidate captions separated by |, e.g. "a cat | a dog"')
    pixels, described = _clip_image(image, c.vision.image_size)
    eos = c.text.eos_token_id
    rows = [ids if ids and ids[-1] == eos else ids + [eos] for ids in (_encode(tok, s) for s in captions)]
    for s, ids in zip(captions, rows):
        _check_length(len(ids), c.text.max_seq_len, f"caption {s!r}")
    from zoo.data.tokenizer import PAD_TOKENS, special_token_id

    pad = special_token_id(tok, PAD_TOKENS)
    pad = eos if pad is None else pad
    T = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    n = net.vision_model.patch_embed.num_patches
    labels = {"vision_model.encoder": ["[class]"] + [f"patch{i}" for i in range(n)],
              "text_model.transformer": _labels(tok, rows[0])}

    def predict(out, k):
        logits = out.logits_per_image[0]
        probs = torch.softmax(logits.float(), dim=-1)
        top = probs.topk(min(k, len(captions)))
        rows_ = [(r + 1, int(i), repr(captions[int(i)]), float(p), float(logits[i]))
                 for r, (p, i) in enumerate(zip(top.values, top.indices))]
        return [(f"captions for {described}, logits = {float(out.logit_scale):.4f} × cos(image, caption)", rows_)]

    notes = [f"image {described}: {tuple(pixels.shape)}, cut into {n} patches after a learned [class] vector",
             f"the text tower reads {len(captions)} captions; caption 0 is shown (batch row 0)"]
    return Pass(labels, {"vision_model.encoder": [], "text_model.transformer": rows[0]},
                lambda: net(pixels, ids, mask), predict, notes)
