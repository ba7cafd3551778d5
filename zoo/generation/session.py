"""A running batch that requests can join between steps (continuous batching, Yu et al., 2022, "Orca"),
for serving: decoder-only models with the KV cache admit new rows at any step — their prompts are
prefilled on their own and merged in, left-padded (`merge_decoder_only`) — and every row leaves the
moment it stops. Encoder-decoders (and decoding without the cache) admit rows only into an empty
session, i.e. batch by batch.

Each row is what it would be alone: its own sampling settings and seeded generator, its own stop
strings and `max_tokens`, its own positions (from the attention mask).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.generation.decoding import Completion, Request, _context, _encode, _Row, _sampling, eos_id
from zoo.generation.sampling import Sampling, pick
from zoo.generation.steppers import DecoderOnlyStepper, Stepper, make_stepper, merge_decoder_only, stepper_class

# (text delta, the Completion once finished, else None) → True to cancel the row
RowCallback = Callable[[str, Optional[Completion]], bool]


class Session:
    def __init__(self, model: nn.Module, tokenizer, use_cache: bool = True, eos_token_id: Optional[int] = None):
        self.model, self.tokenizer, self.use_cache = model, tokenizer, use_cache
        self.kind: type[Stepper] = stepper_class(model)
        self.eos = eos_token_id if eos_token_id is not None else eos_id(model, tokenizer)
        self.context = _context(model, self.kind)
        self.device = next(model.parameters()).device
        self.stepper: Optional[Stepper] = None
        self.logits: Optional[torch.Tensor] = None  # (B, V): the pending next-token logits
        self.rows: list[_Row] = []
        self.sampling: list[Sampling] = []
        self.callbacks: list[RowCallback] = []

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def joinable(self) -> bool:
        """Whether rows may join while others run (decoder-only with the cache), not only when empty."""
        return issubclass(self.kind, DecoderOnlyStepper) and self.use_cache

    def _length(self) -> int:
        return self.stepper.ids.shape[1] if isinstance(self.stepper, DecoderOnlyStepper) else 0

    def _room(self, prompt: list[int], request: Request) -> int:
        own = len(prompt) if self.kind.continues_prompt else 0
        return request.max_tokens if self.context is None else min(request.max_tokens, self.context - own)

    def fits(self, request: Request) -> bool:
        """Whether `request` can join now: the session is empty, or it admits rows and the padded
        length stays within the model's context until every row is done."""
        if not self.rows:
            return True
        if not self.joinable:
            return False
        if self.context is None:
            return True
        prompt = _encode(self.tokenizer, request.prompt)
        left = [r.limit - len(r.ids) for r in self.rows] + [self._room(prompt, request)]
        return max(self._length(), len(prompt)) + max(left) <= self.context

    def add(self, requests: Sequence[Request], callbacks: Sequence[RowCallback]) -> None:
        """Prefill `requests` and merge them into the running batch; a ZooError (a prompt beyond the
        context, an empty prompt) leaves the session as it was."""
        prompts = [_encode(self.tokenizer, r.prompt) for r in requests]
        for ids in prompts:
            if self.context is not None and self.kind.continues_prompt and len(ids) > self.context:
                raise ZooError(f"the prompt has {len(ids)} tokens but the model's context is {self.context}; "
                               "shorten the prompt")
        rows = [_Row(r, p, self._room(p, r), self.tokenizer, False) for r, p in zip(requests, prompts)]
        with torch.inference_mode():
            stepper = make_stepper(self.model, prompts, pad_id=0, use_cache=self.use_cache)
            logits = stepper.start()
        if self.stepper is None:
            self.stepper, self.logits = stepper, logits
        else:
            merge_decoder_only(self.stepper, stepper)
            self.logits = torch.cat([self.logits, logits])
        self.rows += rows
        self.sampling += [_sampling(r, self.device) for r in requests]
        self.callbacks += list(callbacks)
        self._drop([j for j, r in enumerate(self.rows) if r.limit <= 0 and self._finish(j, "", r._emit("", "length")[1])])

    def _finish(self, j: int, delta: str, done: Optional[Completion]) -> bool:
        cancel = self.callbacks[j](delta, done)
        if cancel and done is None:
            self.callbacks[j]("", self.rows[j].cancel())
            return True
        return done is not None

    def step(self) -> None:
        """One token for every row; finished rows leave at once."""
        tokens = pick(self.logits, self.sampling)
        finished = []
        for j, (row, t) in enumerate(zip(self.rows, tokens.tolist())):
            delta, done = row.add(t, self.eos)
            if self._finish(j, delta, done):
                finished.append(j)
        keep = self._drop(finished)
        if self.rows:
            with torch.inference_mode():
                self.logits = self.stepper.step(tokens.index_select(0, keep))

    def _drop(self, finished: list[int]) -> torch.Tensor:
        keep = torch.tensor([j for j in range(len(self.rows)) if j not in set(finished)], dtype=torch.long,
                            device=self.device)
        if finished:
            kept = keep.tolist()
            self.rows = [self.rows[j] for j in kept]
            self.sampling = [self.sampling[j] for j in kept]
            self.callbacks = [self.callbacks[j] for j in kept]
            if not self.rows:
                self.stepper, self.logits = None, None
            else:
                self.stepper.select(keep)
                self.logits = self.logits.index_select(0, keep)
        return keep
