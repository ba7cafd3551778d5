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


def add_lora(model, r=8, alpha=16.0, dropout=0.0, targets=("q_proj", "v_proj"), **kwargs):
    """Wrap `model`'s matching linear layers in LoRA adapters (B = 0) and freeze the rest; returns `model`
    (see `zoo.adapters.add_lora`)."""
    from zoo.adapters import add_lora as _add_lora

    return _add_lora(model, r=r, alpha=alpha, dropout=dropout, targets=targets, **kwargs)


def merge_lora(model):
    """Fold LoRA adapters into the weights, restoring plain `nn.Linear`s; returns `model`."""
    from zoo.adapters import merge_lora as _merge_lora

    return _merge_lora(model)


def load_peft(model, path):
    """Add a PEFT LoRA adapter (a directory PEFT's save_pretrained wrote) to the zoo model of its base."""
    from zoo.adapters import load_peft as _load_peft

    return _load_peft(model, path)


__all__ = ["ZooError", "add_lora", "from_hf", "load_peft", "merge_lora", "to_hf", "__version__"]
