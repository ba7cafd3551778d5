"""Export to the Hugging Face format: `to_hf(model, directory)` writes

- `config.json` and `model.safetensors` (or shards `model-0000i-of-0000n.safetensors` with
  `model.safetensors.index.json` above `max_shard_size` bytes), from the family's converter
  `zoo.hf.<family>.export(model) -> (hf_config, hf_state_dict)`, the inverse of its importer;
- `generation_config.json` for generators (GPT, T5, BART): special ids, greedy by default; a chat
  template's stop strings that are single tokens (`<|end|>`) are eos ids too, after the tokenizer's;
- `tokenizer.json` (the zoo tokenizer as it is) and `tokenizer_config.json` (the generic fast
  tokenizer class, so that transformers keeps our pipeline instead of rebuilding a model-specific one;
  the special tokens by role; the chat template when there is one),

so that `transformers.AutoTokenizer` / `AutoModelFor...` `.from_pretrained(directory)` load it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.hf import ClassifierHead, refuse

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_SHARD_SIZE = 5 * 1024**3  # bytes: Hugging Face's own default for save_pretrained

# tokenizer_config.json role → the zoo's special tokens that fill it, in order of preference
ROLES = {
    "bos_token": ("<s>", "<|endoftext|>", "[CLS]"),
    "eos_token": ("</s>", "<|endoftext|>", "[SEP]", "<eos>"),
    "unk_token": ("<unk>", "[UNK]"),
    "pad_token": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "mask_token": ("<mask>", "[MASK]"),
    "cls_token": ("[CLS]",),
    "sep_token": ("[SEP]",),
}


def special_tokens(tokenizer) -> dict[str, str]:
    """{role: token} for the roles the tokenizer has a token for."""
    out = {}
    for role, candidates in ROLES.items():
        token = next((t for t in candidates if tokenizer.token_to_id(t) is not None), None)
        if token is not None:
            out[role] = token
    return out


def special_ids(tokenizer) -> dict[str, int]:
    """{"bos_token_id": ..., ...} for config.json and generation_config.json; GPT-2's convention of
    padding with end-of-text when there is no pad token."""
    if tokenizer is None:
        return {}
    ids = {f"{role}_id": tokenizer.token_to_id(tok) for role, tok in special_tokens(tokenizer).items()}
    ids = {k: v for k, v in ids.items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if "pad_token_id" not in ids and "eos_token_id" in ids:
        ids["pad_token_id"] = ids["eos_token_id"]
    return ids


def write_tokenizer(tokenizer, directory: Path, max_length: Optional[int], chat_template: Optional[str]) -> None:
    (directory / "tokenizer.json").write_text(tokenizer.to_str())
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              **special_tokens(tokenizer)}
    if max_length:
        config["model_max_length"] = max_length
    if chat_template:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def write_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_size: int) -> list[str]:
    """model.safetensors, or shards of at most `max_shard_size` bytes (a larger tensor gets one of its
    own) with an index; returns the file names written."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, str(directory / name), metadata=meta)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [*names, "model.safetensors.index.json"]


def _plain(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors of `dtype` (floats only), none sharing memory (safetensors refuses that)."""
    out, seen = {}, set()
    for name, t in state.items():
        t = t.detach().to("cpu", dtype=dtype if t.is_floating_point() else t.dtype).contiguous()
        if t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[name] = t
    return out


def _generation_config(family, cfg: dict, ids: dict, stop_ids: Sequence[int] = ()) -> dict:
    gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                               "forced_eos_token_id") if cfg.get(k) is not None}
    gen = {**{k: v for k, v in ids.items() if k not in gen}, **gen, "do_sample": False}
    eos = gen.get("eos_token_id")
    eos = [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
    extra = [i for i in dict.fromkeys(stop_ids) if i not in eos]
    if extra:  # generate() stops at any id of a list; the model's own eos stays first (pad falls back to it)
        gen["eos_token_id"] = [*eos, *extra]
    return gen


def stop_token_ids(tokenizer, stop: Sequence[str]) -> list[int]:
    """The ids of the stop strings that are one token of `tokenizer` (a chat template's end-of-turn
    marker, added as a special token); longer stop strings have no single id to stop at."""
    if tokenizer is None:
        return []
    found = (tokenizer.token_to_id(s) for s in stop if s)
    return [i for i in found if i is not None]


def to_hf(model: nn.Module, path: str | os.PathLike, dtype: torch.dtype | str = torch.float32, tokenizer=None,
          head: Optional[ClassifierHead] = None, max_shard_size: int = DEFAULT_SHARD_SIZE,
          chat_template: Optional[str] = None, chat_stop: Sequence[str] = ()) -> Path:
    """Write `model` (with its `tokenizer`, a `tokenizers.Tokenizer`; default `model.tokenizer` when set)
    as a Hugging Face checkpoint directory `path`; with `head`, as the family's sequence classifier.
    `chat_template` (Jinja) goes to tokenizer_config.json, and those of `chat_stop` (the strings that end
    its answers) that are single tokens to generation_config.json's eos ids.
    Returns the directory. A configuration Hugging Face cannot express raises a one-line ZooError."""
    from zoo.families import Capability, family_of

    family = family_of(model)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    export = family.converter("export")
    if head is not None and not (family.can(Capability.CAUSAL_LM) or family.can(Capability.MASKED_LM)):
        raise refuse(family.name, "a classifier head", "Hugging Face classifiers of this family are not exported; "
                     "zoo exports GPT and BERT classifiers")
    cfg, state = export(model, head=head) if head is not None else export(model)
    ids = special_ids(tokenizer)
    if family.can(Capability.CAUSAL_LM):
        cfg.update(ids)
    elif family.can(Capability.IMAGE_TEXT) and "pad_token_id" in ids:
        cfg["text_config"].update(pad_token_id=ids["pad_token_id"], bos_token_id=ids.get("bos_token_id"))
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    files = write_weights(_plain(state, dtype), directory, max_shard_size)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    files.append("config.json")
    if head is None and (family.can(Capability.CAUSAL_LM) or family.can(Capability.SEQ2SEQ)):
        gen = _generation_config(family, cfg, ids, stop_token_ids(tokenizer, chat_stop))
        (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if tokenizer is not None:
        c = model.config
        max_length = getattr(c, "max_seq_len", None) or getattr(getattr(c, "text", None), "max_seq_len", None)
        write_tokenizer(tokenizer, directory, max_length, chat_template)
    return directory


def check_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ZooError(f"--dtype {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]
