"""Compression: quantization (torchao), structured and unstructured pruning, and the helpers that save
compressed models. Distillation is a task (`zoo.tasks.distillation`). Each is a function on a built
model, applied from outside (DESIGN.md: quantize → LoRA → TP → AC → compile → FSDP2)."""

from zoo.compress.prune import magnitude_prune, prune_structured
from zoo.compress.quantize import SCHEMES, load_quantized, quantize, save_quantized

__all__ = ["SCHEMES", "load_quantized", "magnitude_prune", "prune_structured", "quantize", "save_quantized"]
