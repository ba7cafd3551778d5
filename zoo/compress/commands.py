"""`zoo quantize` and `zoo prune`: the command-line faces of `zoo.compress`."""

from __future__ import annotations

from typing import Optional

from zoo.compress.quantize import Scheme


def quantize(model: str, out: str, scheme: Scheme = "int8-weight", device: str = "cpu") -> str:
    """Quantize a trained model with torchao and save it as a folder that zoo generate, serve and evaluate load.

    The folder holds model.safetensors (plain tensors only: each quantized weight as its components),
    zoo.json (family, config, scheme; an instruction-tuned model's chat template, so zoo serve of the folder
    prompts it as it was trained) and tokenizer.json; loading it unpickles nothing.

    Args:
        model: a `.ckpt` file written by `zoo fit`, a Hugging Face directory, or a hub name.
        out: the output folder.
        scheme: "int8-weight" or "int8-dynamic" (CPU or CUDA); "int4-weight" or "float8" (CUDA only).
        device: where to quantize ("cpu", "cuda").
    """
    from zoo.checkpoint import is_checkpoint, load_model, model_from_read, read_checkpoint
    from zoo.compress.quantize import check_scheme, plain_state, quantizable_linears
    from zoo.compress.quantize import quantize as quantize_model
    from zoo.compress.quantize import save_quantized
    from zoo.serve.chat import saved_template

    check_scheme(scheme, device)
    ckpt = read_checkpoint(model) if is_checkpoint(model) else None  # read once: the model and its chat template
    net, tokenizer = model_from_read(ckpt, model) if ckpt is not None else load_model(model)
    chat_template = saved_template(model, ckpt)
    before = sum(t.numel() * t.element_size() for t in plain_state(net).values())
    quantize_model(net.to(device), scheme)
    folder = save_quantized(net, out, scheme, tokenizer, chat_template)
    after = (folder / "model.safetensors").stat().st_size
    print(f"{scheme}: {len(quantizable_linears(net))} linear layers quantized; "
          f"{before / 2**20:.2f} MiB of weights -> {after / 2**20:.2f} MiB in {folder}")
    return str(folder)


def prune(model: str, out: str, target: float = 0.7, heads: bool = False,
          magnitude: Optional[float] = None) -> str:
    """Prune a trained model and save it as a zoo `.ckpt` (generate, serve, export and `init_from` read it).

    Structured (default): remove the least important MLP neurons (and attention heads, with --heads
    true, where the family allows) so that about `target` of the non-embedding parameters remain; the
    result is a smaller dense model of the same family. Fine-tune it afterwards to recover quality
    (`zoo fit ... --model.init_from OUT` with the pruned widths, or `benchmarks/compress.py`).

    Args:
        model: a `.ckpt` file written by `zoo fit`, or a Hugging Face directory.
        out: the output `.ckpt` path.
        target: fraction of the non-embedding parameters to keep, in (0, 1].
        heads: also remove attention heads (GPT only: other families tie head width to d_model/n_head).
        magnitude: instead, zero this fraction of the smallest weights (unstructured: same shapes, same
            size and speed without sparse kernels; for comparison).
    """
    from zoo.checkpoint import load_model
    from zoo.compress.prune import describe, magnitude_prune, prune_structured, save_checkpoint

    net, tokenizer = load_model(model)
    if magnitude is not None:
        sparsity = magnitude_prune(net, magnitude)
        save_checkpoint(net, out, tokenizer)
        print(f"unstructured: {sparsity:.1%} of the stack linears' weights are zero (shapes unchanged) -> {out}")
        return out
    small = prune_structured(net, target, heads)
    save_checkpoint(small, out, tokenizer)
    print(f"structured: {describe(net, small)} -> {out}")
    return out
