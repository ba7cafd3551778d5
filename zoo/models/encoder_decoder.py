"""What every encoder-decoder model shares: the forward contract and decoding.

T5 (Raffel et al., 2020) and BART (Lewis et al., 2020) differ in their embeddings, norms and head,
not in how they are run. A subclass defines `encode` and `decode`; this base turns them into

- `forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)` → logits, the
  Hugging Face keyword contract;
- `generate(...)`: greedy search, sampling (temperature, top-k, nucleus top-p), or beam search
  (Graves, 2012; Sutskever et al., 2014), all incremental over a `KVCache` — decoder
  self-attention keys/values grow by one position per step, cross-attention keys/values of the encoder output are computed once, and beam search reorders
  the cache with `KVCache.beam_select`. `use_cache=False` recomputes the whole prefix each step
  and yields the same tokens.

Beam search follows Hugging Face's `generate(num_beams=k)` step for step (scores are summed
log-probabilities; a finished hypothesis of n generated tokens, eos included, scores sum / n^α with
α = `length_penalty`; the 2k best continuations are ranked, eos-continuations among the top k
become hypotheses, the best k others keep running), including its stopping rule: with
`early_stopping=False` a batch item stops once it holds k finished hypotheses and its best running
beam, scored at the current length, cannot beat the worst of them; with `early_stopping=True` it
stops as soon as it holds k finished hypotheses.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks import KVCache
from zoo.generation import next_token
from zoo.models.base import FeatureModel, Seq2SeqModel, ZooModel

NEG = -1.0e9  # the "impossible" score Hugging Face's beam search uses; kept so ties resolve alike


class EncoderDecoderLM(ZooModel, Seq2SeqModel, FeatureModel):
    """Base of sequence-to-sequence language models.

    Subclasses implement `encode(input_ids, attention_mask)` → (B, S, C) and
    `decode(decoder_input_ids, encoder_hidden_states, attention_mask, decoder_attention_mask, cache)`
    → logits (B, T, V), and carry a config with `pad_token_id`, `eos_token_id` and
    `decoder_start_token_id`. `max_target_positions` bounds the decoder length (None = unbounded).
    """

    max_target_positions: Optional[int] = None

    @property
    def feature_dim(self) -> int:
        return self.config.d_model

    def forward(
        self,
        input_ids: Optional[torch.Tensor],  # (B, S); None when encoder_hidden_states are given
        attention_mask: Optional[torch.Tensor] = None,  # (B, S), 1 = real token
        decoder_input_ids: Optional[torch.Tensor] = None,  # (B, T), starting with the decoder start token
        decoder_attention_mask: Optional[torch.Tensor] = None,  # (B, T)
        encoder_hidden_states: Optional[torch.Tensor] = None,  # (B, S, C): skip the encoder
    ) -> torch.Tensor:
        """Logits (B, T, V) of the token after each decoder position."""
        if decoder_input_ids is None:
            raise ValueError("pass decoder_input_ids (for training, `model.shift_right(labels)`)")
        if encoder_hidden_states is None:
            if input_ids is None:
                raise ValueError("pass input_ids or encoder_hidden_states")
            encoder_hidden_states = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, encoder_hidden_states, attention_mask, decoder_attention_mask)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing decoder inputs: the start token, then labels[:, :-1] (-100 → pad)."""
        c = self.config
        shifted = labels.new_full(labels.shape, c.decoder_start_token_id)
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, c.pad_token_id)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,  # (B, S), padded on the right
        attention_mask: Optional[torch.Tensor] = None,  # (B, S), 1 = real token
        max_new_tokens: int = 20,
        num_beams: int = 1,
        use_cache: bool = True,
        eos_token_id: Optional[int] = None,
        length_penalty: float = 1.0,
        early_stopping: bool = False,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Decode greedily (`num_beams=1`), by sampling (`do_sample=True`), or with beam search.

        Returns (B, 1 + n) decoder token ids that START WITH `decoder_start_token_id` (as Hugging
        Face's `generate` does), n ≤ `max_new_tokens`. A sequence that ended with eos is followed by
        `pad_token_id`. `eos_token_id` defaults to the config's; when both are None decoding runs
        for `max_new_tokens`. Dropout is not switched off here: call `model.eval()` first.
        Sampling divides the logits by `temperature`, keeps the `top_k` most likely tokens and then
        the smallest set with probability ≥ `top_p` (Hugging Face's order), and draws from
        `generator` (torch's global one when None).
        """
        if num_beams < 1 or max_new_tokens < 1:
            raise ValueError(f"need num_beams ≥ 1 and max_new_tokens ≥ 1, got {num_beams} and {max_new_tokens}")
        if do_sample and num_beams > 1:
            raise ValueError("sampling with beam search is not supported: use num_beams=1 to sample, "
                             "or do_sample=False for beam search")
        if do_sample and temperature <= 0:
            raise ValueError(f"sampling needs a temperature > 0, got {temperature}; do_sample=False decodes greedily")
        if self.max_target_positions is not None:
            max_new_tokens = min(max_new_tokens, self.max_target_positions)  # the last token is never fed
        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        mask = attention_mask.bool() if attention_mask is not None else None
        memory = self.encode(input_ids, mask)  # (B, S, C)
        if num_beams == 1:
            pick = (lambda logits: next_token(logits, temperature, top_k, top_p, generator)) if do_sample else None
            return self._greedy(memory, mask, max_new_tokens, eos, use_cache, pick)
        return self._beam_search(memory, mask, max_new_tokens, num_beams, eos, length_penalty, early_stopping,
                                 use_cache)

    def _fill_id(self, eos: Optional[int]) -> int:
        pad = self.config.pad_token_id
        return pad if pad is not None else (eos if eos is not None else 0)

    def _start(self, batch: int, device) -> torch.Tensor:  # (batch, 1)
        return torch.full((batch, 1), self.config.decoder_start_token_id, dtype=torch.long, device=device)

    def _next_logits(self, ids, memory, mask, cache: Optional[KVCache]) -> torch.Tensor:
        """fp32 logits (B, V) of the token after `ids` (B, T): one new position with a cache, all without."""
        step = ids[:, -1:] if cache is not None else ids
        return self.decode(step, memory, mask, cache=cache)[:, -1].float()

    def _greedy(self, memory, mask, max_new_tokens, eos, use_cache, pick=None) -> torch.Tensor:
        """One token per step: the most likely one, or `pick(logits (B, V))` (sampling)."""
        B = memory.shape[0]
        ids = self._start(B, memory.device)
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        cache = KVCache() if use_cache else None
        for _ in range(max_new_tokens):
            logits = self._next_logits(ids, memory, mask, cache)  # (B, V)
            tok = pick(logits) if pick is not None else logits.argmax(-1)  # (B,)
            if eos is not None:
                tok = tok.masked_fill(done, self._fill_id(eos))
                done |= tok == eos
            ids = torch.cat([ids, tok[:, None]], dim=1)
            if eos is not None and bool(done.all()):
                break
        return ids

    def _beam_search(self, memory, mask, max_new_tokens, k, eos, length_penalty, early_stopping, use_cache):
        B, dev = memory.shape[0], memory.device
        memory = memory.repeat_interleave(k, dim=0)  # (B·k, S, C): beam b of item i is row i·k + b
        mask = mask.repeat_interleave(k, dim=0) if mask is not None else None
        seqs = self._start(B * k, dev).view(B, k, 1)  # running beams (B, k, 1 + step)
        scores = torch.zeros(B, k, device=dev)  # their summed log-probabilities
        scores[:, 1:] = NEG  # all beams start equal: expand only the first
        hyps = _Hypotheses(B, k, max_new_tokens + 1, self._fill_id(eos), dev)
        is_open = torch.ones(B, 1, dtype=torch.bool, device=dev)  # can item i still improve its hypotheses?
        cache = KVCache() if use_cache else None
        for step in range(max_new_tokens):
            length = step + 1  # generated tokens, the new one included
            logp = F.log_softmax(self._next_logits(seqs.flatten(0, 1), memory, mask, cache), dim=-1)
            V = logp.shape[-1]
            logp = logp.view(B, k, V) + scores[:, :, None]
            top, flat = logp.view(B, k * V).topk(2 * k)  # (B, 2k) best continuations over all beams
            parent, token = flat // V, flat % V
            cand = torch.cat([_gather(seqs, parent), token[:, :, None]], dim=-1)  # (B, 2k, 1 + length)
            ends = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
            if length == max_new_tokens:
                ends = torch.ones_like(ends)
            alive = top + ends.float() * NEG
            keep = alive.topk(k).indices  # the k best continuations that did not end keep running
            seqs, scores, origin = _gather(cand, keep), alive.gather(1, keep), parent.gather(1, keep)
            hyps.add(cand, top, ends, length, length_penalty, is_open, early_stopping)
            if cache is not None:
                cache.beam_select((origin + torch.arange(B, device=dev)[:, None] * k).flatten())
            best_running = scores[:, :1] / length**length_penalty
            is_open = is_open & (best_running > hyps.worst()).any(-1, keepdim=True)
            if not bool(is_open.any()) or bool(ends.all()) or (early_stopping and bool(hyps.done.all())):
                break
        return hyps.best()


def _gather(seqs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """seqs (B, n, L) rows picked by index (B, m) → (B, m, L)."""
    return seqs.gather(1, index[:, :, None].expand(-1, -1, seqs.shape[-1]))


class _Hypotheses:
    """The k best finished hypotheses of each batch item, kept sorted by score."""

    def __init__(self, batch: int, k: int, max_len: int, fill: int, device):
        self.k, self.fill = k, fill
        self.seqs = torch.full((batch, k, max_len), fill, dtype=torch.long, device=device)
        self.scores = torch.full((batch, k), NEG, device=device)
        self.lengths = torch.zeros(batch, k, dtype=torch.long, device=device)  # generated tokens
        self.done = torch.zeros(batch, k, dtype=torch.bool, device=device)  # slot holds a hypothesis

    def add(self, cand, top, ends, length, length_penalty, is_open, early_stopping) -> None:
        """Merge in the candidates (B, 2k, L) that just ended and rank among the top k."""
        k = self.k
        ended = ends & (torch.arange(2 * k, device=ends.device) < k)  # only the top k may finish
        score = top / length**length_penalty
        if early_stopping:
            score = score + self.done.all(-1, keepdim=True).float() * NEG
        score = score + (~is_open).float() * NEG
        score = score + (~ended) * NEG
        padded = F.pad(cand, (0, self.seqs.shape[-1] - cand.shape[-1]), value=self.fill)
        seqs = torch.cat([self.seqs, padded], dim=1)
        scores = torch.cat([self.scores, score], dim=1)
        lengths = torch.cat([self.lengths, torch.full_like(ended, length, dtype=torch.long)], dim=1)
        done = torch.cat([self.done, ended], dim=1)
        best = scores.topk(k).indices
        self.seqs, self.scores = _gather(seqs, best), scores.gather(1, best)
        self.lengths, self.done = lengths.gather(1, best), done.gather(1, best)

    def worst(self) -> torch.Tensor:
        """(B, k): the worst finished score where every slot is filled, else NEG (anything beats it)."""
        return torch.where(self.done, self.scores.min(1, keepdim=True).values, NEG)

    def best(self) -> torch.Tensor:
        """(B, 1 + n): each item's best hypothesis, cropped to the longest among them."""
        n = int(self.lengths[:, 0].max())
        return self.seqs[:, 0, : 1 + n]
