"""Autoregressive decoding for decoder-only models: greedy, temperature, top-k and nucleus (top-p,
Holtzman et al., 2020) sampling, with or without the KV cache (both give the same tokens).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from zoo.blocks import KVCache
from zoo.errors import ZooError


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """Set to -inf the logits outside the top-k and outside the smallest set with mass ≥ top_p."""
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None) -> torch.Tensor:
    """Pick the next token from (B, V) logits; temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def context_limit(model: nn.Module) -> Optional[int]:
    """Longest sequence the model can embed (learned/sinusoidal positions), or None if unbounded."""
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "position", "learned") in ("learned", "sinusoidal"):
        return getattr(cfg, "max_seq_len", None)
    return None


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,  # (B, T), left-padded when prompts differ in length
    *,
    attention_mask: Optional[torch.Tensor] = None,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eos_token_id: Optional[int] = None,
    use_cache: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Extend `input_ids` by up to `max_new_tokens` tokens; returns (B, T + new)."""
    B, T = input_ids.shape
    limit = context_limit(model)
    if limit is not None and T > limit:
        raise ZooError(f"the prompt has {T} tokens but the model's context is {limit}; shorten the prompt")
    if limit is not None:
        max_new_tokens = min(max_new_tokens, limit - T)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    cache = KVCache() if use_cache else None
    ids, step_ids = input_ids, input_ids
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        positions = positions[:, -step_ids.shape[1]:]
        logits = model(step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
        tok = next_token(logits[:, -1], temperature, top_k, top_p, generator)
        if eos_token_id is not None:
            tok = torch.where(done, torch.full_like(tok, eos_token_id), tok)
            done |= tok == eos_token_id
        ids = torch.cat([ids, tok[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(tok[:, None])], dim=1)
        step_ids = tok[:, None] if use_cache else ids
        if eos_token_id is not None and bool(done.all()):
            break
    return ids
