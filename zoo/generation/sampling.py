"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p, Holtzman et
al., 2020) sampling, in Hugging Face's order (temperature → top-k → top-p).

A batch may mix settings: each row has its own `Sampling`, and each row its own random generator, so
a seeded request draws the same tokens whether it is decoded alone or beside others. Rows that share
one `Sampling` (one generator, or torch's global one) draw in one `torch.multinomial` call, as Hugging
Face's `generate` does, which keeps seeded draws equal to theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Sampling:
    """How one row picks its tokens. `temperature` 0 is greedy; `generator` None draws from torch's
    global generator."""

    temperature: float = 0.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    generator: Optional[torch.Generator] = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


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


def pick(logits: torch.Tensor, rows: list[Sampling]) -> torch.Tensor:
    """Next tokens (B,) for logits (B, V), row i picking by `rows[i]`."""
    first = rows[0]
    if all(r is first for r in rows):  # one setting for the whole batch: one draw, as HF does
        return next_token(logits, first.temperature, first.top_k, first.top_p, first.generator)
    tokens = logits.argmax(-1)
    for i, r in enumerate(rows):
        if not r.greedy:
            tokens[i] = next_token(logits[i:i + 1], r.temperature, r.top_k, r.top_p, r.generator)[0]
    return tokens
