"""The entry points: token ids in, token ids out (`generate_ids`, and `generate` for decoder-only
models, which returns prompt + continuation), and texts in, texts out (`generate_batch`: a list of
requests of different lengths and settings, decoded together, each stopping on its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from zoo.data.tokenizer import EOS_TOKENS, special_token_id
from zoo.errors import ZooError
from zoo.generation.sampling import Sampling
from zoo.generation.search import beam_search, token_by_token
from zoo.generation.steppers import Stepper, make_stepper, stepper_class


def fill_id(model: nn.Module, eos: Optional[int]) -> int:
    """What follows a row's eos in a rectangular result: the model's pad id, else eos, else 0."""
    pad = getattr(model.config, "pad_token_id", None)
    return pad if pad is not None else (eos if eos is not None else 0)


def _pad(rows: list[list[int]], fill: int, device) -> torch.Tensor:
    n = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [fill] * (n - len(r)) for r in rows], dtype=torch.long, device=device).view(len(rows), n)


@torch.no_grad()
def generate_ids(model: nn.Module, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                 max_new_tokens: int = 20, sampling: Optional[Sampling] = None, num_beams: int = 1,
                 eos_token_id: Optional[int] = None, fill: Optional[int] = None, use_cache: bool = True,
                 length_penalty: float = 1.0, early_stopping: bool = False) -> torch.Tensor:
    """New tokens (B, n), n ≤ `max_new_tokens`, `fill` after each row's eos, for any generating model.

    `input_ids` are left-padded for decoder-only models, either side for encoder-decoders. All rows
    share `sampling` (one draw per row per step from its generator, as Hugging Face's `generate`).
    """
    stepper = stepper_class(model)(model, input_ids, attention_mask, use_cache)
    if stepper.max_new_tokens is not None:
        max_new_tokens = min(max_new_tokens, stepper.max_new_tokens)
    fill = fill_id(model, eos_token_id) if fill is None else fill
    B = input_ids.shape[0]
    if num_beams > 1:
        if max_new_tokens < 1:
            return input_ids.new_zeros(B, 0)
        return beam_search(stepper, B, num_beams, max_new_tokens, eos_token_id, fill, length_penalty, early_stopping)
    rows = token_by_token(stepper, [max_new_tokens] * B, [sampling or Sampling()] * B, eos_token_id, fill=fill)
    return _pad(rows, fill, input_ids.device)


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, *, attention_mask: Optional[torch.Tensor] = None,
             max_new_tokens: int = 50, temperature: float = 1.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, eos_token_id: Optional[int] = None, use_cache: bool = True,
             generator: Optional[torch.Generator] = None, num_beams: int = 1) -> torch.Tensor:
    """Decoder-only models: extend `input_ids` (B, T), left-padded, by up to `max_new_tokens`; (B, T + n).
    Rows that ended with `eos_token_id` continue with it."""
    fill = eos_token_id if eos_token_id is not None else 0
    new = generate_ids(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
                       sampling=Sampling(temperature, top_k, top_p, generator), eos_token_id=eos_token_id,
                       fill=fill, use_cache=use_cache)
    return torch.cat([input_ids, new], dim=1)


@dataclass
class Request:
    """One text to generate from, with its own settings (OpenAI's completion parameters)."""

    prompt: str | list[int]
    max_tokens: int = 16
    temperature: float = 0.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None  # None: drawn from torch's global generator
    stop: Sequence[str] = ()


@dataclass
class Completion:
    text: str  # the new text (after the prompt for decoder-only models, unless echoed)
    token_ids: list[int]  # the new tokens, eos included when it was emitted
    prompt_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (eos or a stop string), "length", or "cancelled"


# (row, text delta, the row's Completion once it is finished, else None) → True to cancel the row
OnText = Callable[[int, str, Optional[Completion]], bool]


def eos_id(model: nn.Module, tokenizer) -> Optional[int]:
    """The token that ends a generation: the config's eos (encoder-decoders), else the tokenizer's."""
    eos = getattr(model.config, "eos_token_id", None)
    if eos is None and tokenizer is not None:
        eos = special_token_id(tokenizer, EOS_TOKENS)
    return eos


class _Row:
    """The text side of one row: decoded text, stop strings, what was already streamed."""

    def __init__(self, request: Request, prompt_ids: list[int], limit: int, tokenizer, echo: bool):
        self.request, self.prompt_ids, self.limit, self.tokenizer = request, prompt_ids, limit, tokenizer
        self.prefix = prompt_ids if echo else []
        self.ids: list[int] = []
        self.sent = 0  # characters of text already passed to on_text
        self.result: Optional[Completion] = None

    def add(self, token: int, eos: Optional[int]) -> tuple[str, Optional[Completion]]:
        """Take one token; (the text that became final, the Completion if the row is finished)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.prefix + self.ids)
        start = len(self.tokenizer.decode(self.prefix)) if self.prefix else 0  # stop strings match new text only
        hits = [i for i in (text.find(s, start) for s in self.request.stop if s) if i >= 0]
        cut = min(hits, default=-1)
        reason = None
        if cut >= 0:
            text, reason = text[:cut], "stop"
        elif token == eos or self.tokenizer.id_to_token(token) in self.request.stop:
            reason = "stop"  # eos, or a stop string that is one token (a special token: decoding drops its text)
        elif len(self.ids) >= self.limit:
            reason = "length"
        return self._emit(text, reason)

    def _emit(self, text: str, reason: Optional[str]) -> tuple[str, Optional[Completion]]:
        safe = len(text)
        if reason is None:  # hold back a partial character and what may begin a stop string
            safe = len(text.rstrip("\ufffd"))
            for s in self.request.stop:
                for n in range(min(len(s) - 1, safe), 0, -1):
                    if text[:safe].endswith(s[:n]):
                        safe -= n
                        break
        delta, self.sent = text[self.sent:max(safe, self.sent)], max(safe, self.sent)
        if reason is not None:
            self.result = Completion(text, list(self.ids), self.prompt_ids, reason)
        return delta, self.result

    def cancel(self) -> Completion:
        self.result = Completion(self.tokenizer.decode(self.prefix + self.ids), list(self.ids), self.prompt_ids,
                                 "cancelled")
        return self.result


def _encode(tokenizer, prompt: str | list[int]) -> list[int]:
    ids = list(prompt) if isinstance(prompt, list) else tokenizer.encode(prompt).ids
    if not ids:
        raise ZooError("the prompt encodes to no tokens; give a non-empty prompt")
    return ids


def _groups(lengths: list[int], limits: list[int], context: Optional[int]) -> list[list[int]]:
    """Consecutive rows that fit the context together (left padding makes every row as long as the
    longest prompt; positions stay each row's own)."""
    groups: list[list[int]] = []
    for i in range(len(lengths)):
        g = groups[-1] if groups else None
        if g is not None and (context is None or max(lengths[j] for j in g + [i]) + max(limits[j] for j in g + [i])
                              <= context):
            g.append(i)
        else:
            groups.append([i])
    return groups


@torch.no_grad()
def generate_batch(model: nn.Module, tokenizer, requests: Sequence[Request], *, use_cache: bool = True,
                   echo: bool = False, num_beams: int = 1, eos_token_id: Optional[int] = None,
                   on_text: Optional[OnText] = None) -> list[Completion]:
    """Decode `requests` together: prompts of different lengths, each row with its own sampling
    settings and seeded generator (the same seed gives the same text alone or in a batch), stopping
    at eos, its stop strings, or `max_tokens`; a finished row leaves the batch at once.

    `echo`: models that continue their prompt (decoder-only) return prompt + continuation.
    `num_beams` > 1: beam search (greedy requests only; stop strings then cut the best beam).
    `on_text(row, delta, completion)` is called after every token with the text that became final
    (often "": text that might begin a stop string is held back) and, last, the row's Completion; it
    returns True to cancel that row (a client that went away), which then leaves the batch.
    """
    kind: type[Stepper] = stepper_class(model)
    eos = eos_token_id if eos_token_id is not None else eos_id(model, tokenizer)
    prompts = [_encode(tokenizer, r.prompt) for r in requests]
    context = _context(model, kind)
    for ids in prompts:
        if context is not None and kind.continues_prompt and len(ids) > context:
            raise ZooError(f"the prompt has {len(ids)} tokens but the model's context is {context}; shorten the prompt")
    room = [r.max_tokens if context is None else min(r.max_tokens, context - (len(p) if kind.continues_prompt else 0))
            for r, p in zip(requests, prompts)]
    rows = [_Row(r, p, n, tokenizer, echo and kind.continues_prompt) for r, p, n in zip(requests, prompts, room)]
    device = next(model.parameters()).device
    lengths = [len(p) if kind.continues_prompt else 0 for p in prompts]
    for group in _groups(lengths, room, context if kind.continues_prompt else None):
        stepper = make_stepper(model, [prompts[i] for i in group], pad_id=0, use_cache=use_cache)
        if num_beams > 1:
            _beam_rows(stepper, [rows[i] for i in group], group, num_beams, eos, fill_id(model, eos), on_text)
        else:
            _sample_rows(stepper, [rows[i] for i in group], group, eos, device, on_text)
    return [row.result for row in rows]


def _context(model: nn.Module, kind: type[Stepper]) -> Optional[int]:
    from zoo.generation.steppers import context_limit

    return context_limit(model) if kind.continues_prompt else getattr(model, "max_target_positions", None)


def _sampling(request: Request, device) -> Sampling:
    if request.temperature == 0:
        return Sampling()
    seed = request.seed if request.seed is not None else int(torch.randint(2**62, ()).item())
    generator = torch.Generator(device=device).manual_seed(seed)
    return Sampling(request.temperature, request.top_k, request.top_p, generator)


def _sample_rows(stepper, rows: list[_Row], index: list[int], eos, device, on_text) -> None:
    def on_token(j: int, token: int) -> bool:
        row = rows[j]
        delta, done = row.add(token, eos)
        cancel = on_text(index[j], delta, done) if on_text is not None else False  # every token: cancel is prompt
        if cancel and done is None:
            done = row.cancel()
        return done is not None

    token_by_token(stepper, [max(r.limit, 0) for r in rows], [_sampling(r.request, device) for r in rows], eos,
                   on_token=on_token)
    for j, row in enumerate(rows):  # rows with no room at all
        if row.result is None:
            row._emit("", "length")
            if on_text is not None:
                on_text(index[j], "", row.result)


def _beam_rows(stepper, rows: list[_Row], index: list[int], k: int, eos, fill, on_text) -> None:
    if any(r.request.temperature != 0 for r in rows):
        raise ZooError("beam search does not sample: use temperature 0 with num_beams > 1, or num_beams 1 to sample")
    best = beam_search(stepper, len(rows), k, max(r.limit for r in rows), eos, fill)
    for j, (row, seq) in enumerate(zip(rows, best.tolist())):
        for token in seq[:row.limit]:
            delta, done = row.add(token, eos)
            if done is not None:
                break
        if row.result is None:
            row._emit(row.tokenizer.decode(row.prefix + row.ids), "length")
        if on_text is not None:
            on_text(index[j], row.result.text, row.result)
