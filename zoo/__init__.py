"""zoo: a Lightning-based model zoo — GPT, BERT, T5, BART and CLIP on one block library."""

from zoo.errors import ZooError

__version__ = "0.1.0"


def from_hf(path, **kwargs):
    """Load a Hugging Face checkpoint (local directory or hub name) as a zoo model, in eval mode."""
    from zoo.hf import from_hf as _from_hf

    return _from_hf(path, **kwargs)


def to_hf(model, path, **kwargs):
    """Write a zoo model (and its tokenizer) as a Hugging Face checkpoint directory that `transformers`
    loads: config.json, safetensors weights, generation and tokenizer files (see `zoo.interop.hf.to_hf`)."""
    from zoo.interop.hf import to_hf as _to_hf

    return _to_hf(model, path, **kwargs)


__all__ = ["ZooError", "from_hf", "to_hf", "__version__"]
