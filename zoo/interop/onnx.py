"""Export to ONNX for onnxruntime (edge and CPU serving): `export_onnx(model, directory)` writes

- GPT: `model.onnx` (input_ids, attention_mask → logits) and `decoder_step.onnx` (input_ids,
  attention_mask over past + new tokens, past_key_i/past_value_i (B, kv_heads, P, head_dim) → logits,
  present_key_i/present_value_i): greedy or sampled generation in onnxruntime, one step at a time,
  starting from an empty past (P = 0);
- BERT: `model.onnx` (input_ids, attention_mask, token_type_ids → masked-LM logits), or with a
  fine-tuned classifier head `classifier.onnx` (→ class logits);
- CLIP: `text.onnx` (input_ids, attention_mask → text_embeds) and `image.onnx` (pixel_values →
  image_embeds), both L2-normalised;

with dynamic batch and sequence axes, checked against the zoo model in onnxruntime on the CPU, and
optionally int8 weights through onnxruntime's `quantize_dynamic` (size and accuracy change reported).
The graphs are traced with attention on the plain PyTorch backend.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.hf import ClassifierHead

OPSET = 18


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ZooError("ONNX export needs onnx and onnxruntime: pip install zoo[export]") from None
    return onnxruntime


class Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask=attention_mask)


class DecoderStep(nn.Module):
    """One GPT step over a KV cache given as flat tensors (ONNX has no dicts)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.n_layer = model, model.config.n_layer

    def forward(self, input_ids, attention_mask, *past):
        from zoo.blocks import KVCache

        cache = KVCache()
        for i in range(self.n_layer):
            cache.self_kv[i] = (past[2 * i], past[2 * i + 1])
        P = past[0].shape[2]
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)[None] + P  # (1, T)
        logits = self.model(input_ids, attention_mask=attention_mask,
                            position_ids=positions.expand(input_ids.shape[0], -1), past_key_values=cache)
        return (logits, *[t for i in range(self.n_layer) for t in cache.self_kv[i]])


class Classifier(nn.Module):
    def __init__(self, model, head: ClassifierHead):
        super().__init__()
        self.model = model
        self.head = nn.Linear(head.weight.shape[1], head.weight.shape[0], bias=head.bias is not None)
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            if head.bias is not None:
                self.head.bias.copy_(head.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.head(self.model.features(input_ids, attention_mask, token_type_ids))


class MaskedLM(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


class TextTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.encode_text(input_ids, attention_mask)


class ImageTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode_image(pixel_values)


def _sample_text(model, vocab: int, B: int = 3, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, vocab, (B, T), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[-1, -2:] = 0
    return ids, mask


def graphs(model: nn.Module, head: Optional[ClassifierHead]) -> list[tuple[str, nn.Module, dict, dict]]:
    """[(file name, module, {input name: example}, {name: dynamic axes})] for `model`."""
    from zoo.families import can, family_of
    from zoo.models.base import Capability

    text = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    masked_lm = can(model, Capability.MASKED_LM)
    if can(model, Capability.IMAGE_TEXT):
        ids, mask = _sample_text(model, model.config.vocab_size)
        pixels = torch.randn(3, model.config.vision.channels, model.config.vision.image_size,
                             model.config.vision.image_size, generator=torch.Generator().manual_seed(0))
        return [("text.onnx", TextTower(model), {"input_ids": ids, "attention_mask": mask}, text),
                ("image.onnx", ImageTower(model), {"pixel_values": pixels}, {"pixel_values": {0: "batch"}})]
    if not (masked_lm or can(model, Capability.CAUSAL_LM)):
        raise ZooError(f"ONNX export covers GPT, BERT and CLIP; a {family_of(model).name} model exports to "
                       "Hugging Face format (--format hf)")
    ids, mask = _sample_text(model, model.config.vocab_size)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if masked_lm:
        inputs["token_type_ids"] = torch.zeros_like(ids)
        text = {**text, "token_type_ids": {0: "batch", 1: "sequence"}}
    if head is not None:
        return [("classifier.onnx", Classifier(model, head), inputs, text)]
    if masked_lm:
        return [("model.onnx", MaskedLM(model), inputs, text)]
    c = model.config
    kv, hd = c.n_kv_head or c.n_head, c.head_dim or c.d_model // c.n_head
    P = 3
    step = {"input_ids": ids[:, :2], "attention_mask": torch.ones(3, P + 2, dtype=torch.long)}
    step_axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"}}
    for i in range(c.n_layer):
        for kind in ("key", "value"):
            step[f"past_{kind}_{i}"] = torch.randn(3, kv, P, hd, generator=torch.Generator().manual_seed(i))
            step_axes[f"past_{kind}_{i}"] = {0: "batch", 2: "past"}
    return [("model.onnx", Logits(model), inputs, text), ("decoder_step.onnx", DecoderStep(model), step, step_axes)]


def output_names(name: str, module: nn.Module) -> list[str]:
    if isinstance(module, DecoderStep):
        return ["logits"] + [f"present_{k}_{i}" for i in range(module.n_layer) for k in ("key", "value")]
    return [{"text.onnx": "text_embeds", "image.onnx": "image_embeds"}.get(name, "logits")]


def export_graph(path: Path, module: nn.Module, inputs: dict, axes: dict) -> None:
    """torch.onnx.export through torch.export (the dynamo exporter): every named axis dynamic."""
    from torch.export import Dim

    shapes = tuple({axis: Dim.AUTO for axis in axes.get(name, {})} for name in inputs)
    if isinstance(module, DecoderStep):  # torch.export sees *past as one tuple argument
        shapes = (*shapes[:2], shapes[2:])
    torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs),
                      output_names=output_names(path.name, module), dynamic_shapes=shapes, opset_version=OPSET,
                      dynamo=True, external_data=False, verbose=False)


def run(session, inputs: dict) -> list:
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


def export_onnx(model: nn.Module, path, tokenizer=None, head: Optional[ClassifierHead] = None,
                quantize: bool = False) -> list[str]:
    """Write `model`'s ONNX graphs (and tokenizer files) to directory `path`; check each in onnxruntime
    against the model; with `quantize`, also `<name>.int8.onnx`. Returns one report line per graph."""
    ort = require_onnx()
    from zoo.blocks import set_attention_impl

    model = copy.deepcopy(model).float().eval()
    set_attention_impl(model, "torch")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    report = []
    for name, module, inputs, axes in graphs(model, head):
        file = directory / name
        export_graph(file, module, inputs, axes)
        with torch.no_grad():
            want = module(*inputs.values())
        want = want if isinstance(want, tuple) else (want,)
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        got = run(session, inputs)
        err = max((torch.from_numpy(g) - w).abs().max().item() for g, w in zip(got, want))
        line = f"{name}: {file.stat().st_size / 1e6:.2f} MB, max abs error vs torch {err:.2e}"
        if quantize:
            line += "; " + quantize_graph(file, inputs, got[0], ort)
        report.append(line)
    if tokenizer is not None:
        from zoo.interop.hf import write_tokenizer

        write_tokenizer(tokenizer, directory, None, None)
    return report


def quantize_graph(file: Path, inputs: dict, reference, ort) -> str:
    """int8 weights via onnxruntime's quantize_dynamic; its size and max abs change of the first output."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = file.with_suffix(".int8.onnx")
    quantize_dynamic(str(file), str(out), weight_type=QuantType.QInt8)
    got = run(ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]), inputs)[0]
    change = abs(got - reference).max()
    return f"{out.name}: {out.stat().st_size / 1e6:.2f} MB, max abs change {change:.2e}"
