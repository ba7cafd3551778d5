"""Steppers: the one thing decoding needs from a model — the logits of the next token, one step at a
time, for a batch whose rows can be reordered or dropped.

- `DecoderOnlyStepper` (GPT, LLaMA, Mistral): the prompts, left-padded, run once as a prefix; then
  one token per step over the KV cache. Positions come from the attention mask's cumulative sum, so
  a left-padded row sees the positions it would see alone.
- `EncoderDecoderStepper` (T5, BART): the encoder output (memory) is computed once; the decoder
  starts from the decoder start token and takes one token per step, its self-attention keys/values
  growing in the cache and its cross-attention keys/values computed once.

`select(index)` keeps rows `index` (in that order) of everything a stepper holds — inputs, memory,
cache — which is how beam search reorders beams and how a finished row leaves the batch. Without a
cache (`use_cache=False`) each step recomputes the whole prefix and yields the same tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
from torch import nn

from zoo.blocks import KVCache
from zoo.errors import ZooError
from zoo.models.base import CausalLMModel, Seq2SeqModel


def context_limit(model: nn.Module) -> Optional[int]:
    """Longest sequence the model can embed (learned/sinusoidal positions), or None if unbounded
    (relative positions: RoPE, ALiBi, T5 buckets)."""
    cfg = model.config
    if isinstance(model, CausalLMModel) and cfg.position not in ("learned", "sinusoidal"):
        return None
    return getattr(cfg, "max_seq_len", None)  # T5's config has none: unbounded


class Stepper(ABC):
    """Next-token logits for a batch, one step at a time.

    Class attributes describe the kind of model: `continues_prompt` (the output extends the prompt,
    rather than transforming it) and `default_temperature` (what `zoo generate` uses when not told:
    open-ended continuation samples, a transformation decodes greedily).
    """

    continues_prompt: bool
    default_temperature: float
    max_new_tokens: Optional[int] = None  # how many tokens the model can still take (None: unbounded)

    @abstractmethod
    def start(self) -> torch.Tensor:
        """fp32 logits (B, V) of the first new token."""

    @abstractmethod
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed the tokens (B,) just chosen; fp32 logits (B, V) of the next."""

    @abstractmethod
    def select(self, index: torch.Tensor) -> None:
        """Keep rows `index` (a LongTensor), in that order."""


class DecoderOnlyStepper(Stepper):
    continues_prompt = True
    default_temperature = 0.8

    def __init__(self, model: CausalLMModel, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 use_cache: bool = True):
        T = input_ids.shape[1]
        limit = context_limit(model)
        if limit is not None and T > limit:
            raise ZooError(f"the prompt has {T} tokens but the model's context is {limit}; shorten the prompt")
        self.max_new_tokens = None if limit is None else limit - T
        self.model, self.ids = model, input_ids  # (B, T), left-padded
        self.mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
        self.cache = KVCache() if use_cache else None
        self.fed = 0  # positions of `ids` already in the cache
        self.padded = bool((self.mask == 0).any())  # without padding: no mask, the causal fast path

    def _logits(self) -> torch.Tensor:
        new = self.ids[:, self.fed:] if self.cache is not None else self.ids  # (B, t)
        if self.padded:
            positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -new.shape[1]:]
            logits = self.model(new, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache)
        else:
            logits = self.model(new, past_key_values=self.cache)
        if self.cache is not None:
            self.fed = self.ids.shape[1]
        return logits[:, -1].float()

    def start(self) -> torch.Tensor:
        return self._logits()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens[:, None])], dim=1)
        return self._logits()

    def select(self, index: torch.Tensor) -> None:
        index = index.to(self.ids.device)
        self.ids, self.mask = self.ids.index_select(0, index), self.mask.index_select(0, index)
        self.padded = bool((self.mask == 0).any())
        if self.cache is not None:
            self.cache.beam_select(index)


def merge_decoder_only(a: "DecoderOnlyStepper", b: "DecoderOnlyStepper") -> None:
    """Append b's rows to a (both fully fed, their next logits pending): the shorter side is left-padded
    (ids 0, mask 0, zero keys/values), so every row keeps its own positions and sees no padding."""
    T = max(a.ids.shape[1], b.ids.shape[1])

    def left(x: torch.Tensor, dim: int) -> torch.Tensor:
        pad = T - x.shape[dim]
        if pad == 0:
            return x
        shape = list(x.shape)
        shape[dim] = pad
        return torch.cat([x.new_zeros(shape), x], dim=dim)

    a.ids = torch.cat([left(a.ids, 1), left(b.ids, 1)])
    a.mask = torch.cat([left(a.mask, 1), left(b.mask, 1)])
    if a.cache is not None:
        for layer, (k, v) in a.cache.self_kv.items():
            bk, bv = b.cache.self_kv[layer]  # (B, H, T, D)
            a.cache.self_kv[layer] = (torch.cat([left(k, 2), left(bk, 2)]), torch.cat([left(v, 2), left(bv, 2)]))
        a.fed = T
    a.padded = bool((a.mask == 0).any())


class EncoderDecoderStepper(Stepper):
    continues_prompt = False
    default_temperature = 0.0

    def __init__(self, model: Seq2SeqModel, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 use_cache: bool = True):
        self.model = model
        self.mask = attention_mask.bool() if attention_mask is not None else None  # (B, S)
        self.memory = model.encode(input_ids, self.mask)  # (B, S, C), once
        start = model.config.decoder_start_token_id
        self.ids = torch.full((input_ids.shape[0], 1), start, dtype=torch.long, device=input_ids.device)
        self.cache = KVCache() if use_cache else None
        self.max_new_tokens = model.max_target_positions  # the last token is never fed

    def _logits(self) -> torch.Tensor:
        step = self.ids[:, -1:] if self.cache is not None else self.ids
        return self.model.decode(step, self.memory, self.mask, cache=self.cache)[:, -1].float()

    def start(self) -> torch.Tensor:
        return self._logits()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        return self._logits()

    def select(self, index: torch.Tensor) -> None:
        index = index.to(self.ids.device)
        self.ids, self.memory = self.ids.index_select(0, index), self.memory.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
        if self.cache is not None:
            self.cache.beam_select(index)


def stepper_class(model: nn.Module) -> type[Stepper]:
    """The stepper for a model's kind; a ZooError naming what generates when the model does not."""
    from zoo.families import Capability, can, family_of

    if can(model, Capability.CAUSAL_LM):
        return DecoderOnlyStepper
    if can(model, Capability.SEQ2SEQ):
        return EncoderDecoderStepper
    raise ZooError(f"a {family_of(model).name} model does not generate text; causal LMs (GPT, LLaMA, Mistral) "
                   "and encoder-decoders (T5, BART) do")


def pad_prompts(prompts: list[list[int]], pad_id: int, left: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists of different lengths → ids (B, T) and attention mask (B, T), padded on the left
    (decoder-only: every row's last token in the last column) or on the right."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        cols = slice(T - len(p), T) if left else slice(0, len(p))
        ids[i, cols], mask[i, cols] = torch.tensor(p, dtype=torch.long), 1
    return ids.to(device), mask.to(device)


def make_stepper(model: nn.Module, prompts: list[list[int]], pad_id: int, use_cache: bool = True) -> Stepper:
    """The stepper of `model` over token-list prompts, padded as its kind needs."""
    kind = stepper_class(model)
    device = next(model.parameters()).device
    ids, mask = pad_prompts(prompts, pad_id, left=kind.continues_prompt, device=device)
    return kind(model, ids, mask, use_cache)
