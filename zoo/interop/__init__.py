"""Interop: models out of the zoo. `to_hf` writes a Hugging Face checkpoint directory that
`transformers` loads (`zoo.interop.hf`); `export_onnx` writes ONNX graphs that onnxruntime runs
(`zoo.interop.onnx`); `zoo export` (`zoo.interop.export`) does either from a checkpoint."""

from zoo.interop.hf import to_hf

__all__ = ["to_hf"]
