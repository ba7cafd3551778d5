"""`zoo export`: a trained model out of the zoo, as a Hugging Face checkpoint directory or ONNX graphs.

The source is what `zoo fit` wrote (a `.ckpt` file or a sharded checkpoint folder) or a Hugging Face
directory. A fine-tuned classifier's checkpoint also carries the head (`classifier.1.*` in the task's
state dict) and the label names (`checkpoint["zoo"]["labels"]`): it exports as the family's
`...ForSequenceClassification` (HF) or a classifier graph (ONNX). An instruction-tuned model's
checkpoint carries its chat template (`checkpoint["zoo"]["chat_template"]`), written into the
export's `tokenizer_config.json` so that `apply_chat_template` renders what the model was trained on;
its stop strings that are single tokens (`<|end|>` for the default template) join the eos ids of
`generation_config.json`, so that `model.generate` ends at the end of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from torch import nn

from zoo.errors import ZooError
from zoo.hf import ClassifierHead

Format = Literal["hf", "onnx", "peft"]
DType = Literal["float32", "bfloat16", "float16"]


@dataclass
class Source:
    """What an export reads: the model, its tokenizer, a classifier head and a chat template (if any:
    its Jinja source and the strings that end an answer)."""

    model: nn.Module
    tokenizer: Any
    head: Optional[ClassifierHead] = None
    chat_template: Optional[str] = None
    chat_stop: tuple[str, ...] = ()


def load_source(path: str) -> Source:
    """A `zoo fit` checkpoint, a sharded checkpoint folder, or a Hugging Face directory / hub name."""
    from zoo.checkpoint import is_checkpoint, load_model, model_from_read, read_checkpoint
    from zoo.serve.chat import ChatTemplate

    ckpt = read_checkpoint(path) if is_checkpoint(path) else None
    model, tokenizer = model_from_read(ckpt, path) if ckpt is not None else load_model(path)
    head = None
    if ckpt is not None and "classifier.1.weight" in ckpt["state_dict"]:
        state = ckpt["state_dict"]
        head = ClassifierHead(state["classifier.1.weight"], state.get("classifier.1.bias"),
                              [str(x) for x in ckpt["zoo"].get("labels") or []])
    chat = ChatTemplate.for_model(path, ckpt)  # what InstructionTuning saved, or tokenizer_config.json's
    if chat.is_default:
        return Source(model, tokenizer, head)
    return Source(model, tokenizer, head, chat.template.source, chat.stop)


def export(model: str, out: str, format: Format = "hf", dtype: DType = "float32", max_shard_size: int = 5 * 1024**3,
           quantize: bool = False, merge: bool = True) -> str:
    """Export a trained model for other tools: Hugging Face `transformers` (`--format hf`) or onnxruntime
    (`--format onnx`).

    Args:
        model: a `.ckpt` file written by `zoo fit`, a sharded checkpoint folder, or a Hugging Face directory.
        out: the directory to write (created if needed).
        format: "hf": config.json, model.safetensors (sharded above max_shard_size), generation_config.json,
            tokenizer.json + tokenizer_config.json, loadable with AutoModelFor... / AutoTokenizer.
            "onnx": GPT (logits and a decoding step with past keys/values), BERT (masked LM or
            classifier), CLIP (image and text towers) graphs, plus the tokenizer files.
        dtype: the saved weights' dtype (hf): float32, bfloat16 or float16.
        max_shard_size: bytes per safetensors shard (hf).
        quantize: also write int8 dynamically quantized graphs (onnx; onnxruntime's quantize_dynamic).
            "peft": a LoRA run's adapters alone, as PEFT's adapter_config.json + adapter_model.safetensors,
            for `peft.PeftModel.from_pretrained(<its base exported with --format hf --merge false>, out)`.
        merge: (hf, onnx) fold a LoRA run's adapters into the weights (default); false exports the base
            model without them.
    """
    source = load_source(model)
    if format == "peft":
        from zoo.adapters.peft import save_peft
        from zoo.interop.hf import check_dtype

        save_peft(source.model, out, base_model_name_or_path=model, dtype=check_dtype(dtype))
        return _say(f"wrote adapter_config.json, adapter_model.safetensors to {out}; load with "
                    "peft.PeftModel.from_pretrained(<base>, out), the base exported with --format hf --merge false")
    from zoo.adapters.lora import has_lora, merge_lora, strip_lora

    if has_lora(source.model):
        source.model = merge_lora(source.model) if merge else strip_lora(source.model)
    if format == "hf":
        from zoo.interop.hf import check_dtype, to_hf

        written = to_hf(source.model, out, dtype=check_dtype(dtype), tokenizer=source.tokenizer, head=source.head,
                        max_shard_size=max_shard_size, chat_template=source.chat_template,
                        chat_stop=source.chat_stop)
        files = sorted(f.name for f in Path(written).iterdir())
        return _say(f"wrote {', '.join(files)} to {out}; load with transformers' AutoModel/AutoTokenizer .from_pretrained")
    if format == "onnx":
        from zoo.interop.onnx import export_onnx

        report = export_onnx(source.model, out, tokenizer=source.tokenizer, head=source.head, quantize=quantize)
        return _say("\n".join(report))
    raise ZooError(f"--format {format!r} is not one of hf, onnx, peft")


def _say(report: str) -> str:
    print(report)
    return report
