"""The served model: loaded once from a zoo checkpoint or a Hugging Face directory, with what the
endpoints need — its tokenizer, chat template, context, and (fine-tuned classifiers) the linear head
and label names that `zoo.tasks.SequenceClassification` saves (`classifier.` in the state dict,
`labels` in the checkpoint's `zoo` entry)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.families import Capability, can, family_of
from zoo.generation.steppers import context_limit
from zoo.serve.chat import ChatTemplate


@dataclass
class Classifier:
    head: nn.Linear
    labels: list[str]


def _classifier(ckpt: dict) -> Optional[Classifier]:
    """The classification head of a checkpoint written by SequenceClassification (head mode), if any."""
    state = {k: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("classifier.")}
    weights = [k for k in state if k.endswith(".weight")]
    if len(weights) != 1:
        return None
    weight, bias = state[weights[0]], state.get(weights[0][: -len("weight")] + "bias")
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    head.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
    labels = list(ckpt.get("zoo", {}).get("labels") or []) or [str(i) for i in range(weight.shape[0])]
    return Classifier(head.eval(), labels)


class ServedModel:
    """`quantize`: a `zoo.compress.quantize` scheme applied to the stack linears after loading (the
    classifier head stays float); `quantization` is it, or the scheme of a folder `zoo quantize` wrote."""

    def __init__(self, source: str, name: Optional[str] = None, device: str = "cpu", quantize: Optional[str] = None):
        from zoo.checkpoint import is_checkpoint, load_model, model_from_read, read_checkpoint
        from zoo.compress.quantize import maybe_quantize, saved_scheme

        # a zoo checkpoint is read once: the model, a classifier head and the chat template come from it
        ckpt = read_checkpoint(source) if is_checkpoint(source) else None
        model, tokenizer = model_from_read(ckpt, source) if ckpt is not None else load_model(source)
        if tokenizer is None:
            raise ZooError(f"'{source}' carries no tokenizer; save tokenizer.json beside the weights")
        self.model, self.tokenizer = maybe_quantize(model.to(device).eval(), quantize), tokenizer
        self.quantization = quantize or saved_scheme(source)
        self.name = name or Path(source.rstrip("/")).name
        self.family = family_of(model).name
        self.generates = can(model, Capability.CAUSAL_LM) or can(model, Capability.SEQ2SEQ)
        self.continues_prompt = can(model, Capability.CAUSAL_LM)
        # the trained context bounds requests even where positions would extrapolate (RoPE, ALiBi)
        trained = getattr(model.config, "max_seq_len", None) or context_limit(model)
        self.context = trained if self.continues_prompt else getattr(model, "max_target_positions", None)
        self.classifier = _classifier(ckpt) if ckpt is not None else None
        if self.classifier is not None:
            self.classifier.head.to(device)
        self.chat = ChatTemplate.for_model(source, ckpt)
        self.device = device

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and mask (B, T), cut to the context."""
        rows = [self.tokenizer.encode(t).ids[: self.context or None] or [0] for t in texts]
        T = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (T - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], device=self.device)
        return ids, mask

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        ids, mask = self.encode(texts)
        return self.model.features(ids, mask).float().cpu().tolist(), int(mask.sum())

    @torch.inference_mode()
    def classify(self, texts: list[str]) -> tuple[list[dict[str, float]], int]:
        ids, mask = self.encode(texts)
        probs = torch.softmax(self.classifier.head(self.model.features(ids, mask)).float(), -1).cpu()
        return [dict(zip(self.classifier.labels, row.tolist())) for row in probs], int(mask.sum())

    @torch.inference_mode()
    def score_image(self, image_b64: str, captions: list[str]) -> list[float]:
        """CLIP: probabilities of the captions for the image (softmax over scaled cosine similarities)."""
        from zoo.data.images import load_image

        try:
            raw = base64.b64decode(image_b64, validate=True)
            pixels = load_image(io.BytesIO(raw), self.model.config.vision.image_size)[None].to(self.device)
        except Exception as err:
            raise ValueError(f"'image' is not a base64-encoded image file ({type(err).__name__})") from None
        ids, mask = self.encode(captions)
        image, text = self.model.encode_image(pixels), self.model.encode_text(ids, mask)  # (1, P), (N, P)
        scale = self.model.logit_scale.exp()
        return torch.softmax((scale * image @ text.T).float(), -1)[0].cpu().tolist()
