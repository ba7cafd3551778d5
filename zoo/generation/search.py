"""Search over a `Stepper`: token by token (greedy or sampling, each row its own settings and its own
stopping), and beam search.

Beam search follows Hugging Face's `generate(num_beams=k)` step for step (Graves, 2012; Sutskever et
al., 2014): scores are summed log-probabilities; a finished hypothesis of n generated tokens, eos
included, scores sum / n^α with α = `length_penalty`; the 2k best continuations are ranked,
eos-continuations among the top k become hypotheses, the best k others keep running. Its stopping
rule too: with `early_stopping=False` a batch item stops once it holds k finished hypotheses and its
best running beam, scored at the current length, cannot beat the worst of them; with
`early_stopping=True` it stops as soon as it holds k finished hypotheses.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from zoo.generation.sampling import Sampling, pick
from zoo.generation.steppers import Stepper

NEG = -1.0e9  # the "impossible" score Hugging Face's beam search uses; kept so ties resolve alike

OnToken = Callable[[int, int], bool]  # (row, token) → True when the row must stop now


def token_by_token(stepper: Stepper, max_new_tokens: list[int], sampling: list[Sampling], eos: Optional[int],
                   on_token: Optional[OnToken] = None, fill: Optional[int] = None) -> list[list[int]]:
    """Decode each row until eos (included in its tokens), its `max_new_tokens`, or `on_token` says stop.

    A finished row leaves the batch at once (`stepper.select`) and its tokens no longer change. With
    `fill` given, finished rows stay instead, fed `fill` (and still drawn for), as Hugging Face's
    `generate` keeps them: then one shared generator draws exactly the numbers HF's does.
    Returns the new tokens of each row.
    """
    out: list[list[int]] = [[] for _ in max_new_tokens]
    rows = [i for i, n in enumerate(max_new_tokens) if n > 0]  # original index of each live row
    if not rows:
        return out
    if len(rows) < len(out):
        stepper.select(torch.tensor(rows))
    done = [False] * len(out)
    logits = stepper.start()
    while True:
        tokens = pick(logits, [sampling[r] for r in rows])
        if fill is not None:
            tokens = tokens.masked_fill(torch.tensor([done[r] for r in rows], device=tokens.device), fill)
        for r, t in zip(rows, tokens.tolist()):
            if done[r]:
                continue
            out[r].append(t)
            stop_here = on_token(r, t) if on_token is not None else False
            done[r] = stop_here or t == eos or len(out[r]) >= max_new_tokens[r]
        if all(done[r] for r in rows):
            return out
        if fill is None and any(done[r] for r in rows):
            keep = [j for j, r in enumerate(rows) if not done[r]]
            index = torch.tensor(keep, device=tokens.device)
            stepper.select(index)
            tokens, rows = tokens.index_select(0, index), [rows[j] for j in keep]
        logits = stepper.step(tokens)


def beam_search(stepper: Stepper, batch: int, k: int, max_new_tokens: int, eos: Optional[int], fill: int,
                length_penalty: float = 1.0, early_stopping: bool = False) -> torch.Tensor:
    """(batch, n): each item's best hypothesis, `fill` after its eos, n ≤ `max_new_tokens`."""
    stepper.select(torch.arange(batch).repeat_interleave(k))  # beam b of item i is row i·k + b
    logits = stepper.start()
    dev = logits.device
    seqs = torch.zeros(batch, k, 0, dtype=torch.long, device=dev)  # running beams (B, k, step)
    scores = torch.zeros(batch, k, device=dev)  # their summed log-probabilities
    scores[:, 1:] = NEG  # all beams start equal: expand only the first
    hyps = _Hypotheses(batch, k, max_new_tokens, fill, dev)
    is_open = torch.ones(batch, 1, dtype=torch.bool, device=dev)  # can item i still improve its hypotheses?
    for step in range(max_new_tokens):
        length = step + 1  # generated tokens, the new one included
        logp = F.log_softmax(logits, dim=-1)
        V = logp.shape[-1]
        logp = logp.view(batch, k, V) + scores[:, :, None]
        top, flat = logp.view(batch, k * V).topk(2 * k)  # (B, 2k) best continuations over all beams
        parent, token = flat // V, flat % V
        cand = torch.cat([_gather(seqs, parent), token[:, :, None]], dim=-1)  # (B, 2k, length)
        ends = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
        if length == max_new_tokens:
            ends = torch.ones_like(ends)
        alive = top + ends.float() * NEG
        keep = alive.topk(k).indices  # the k best continuations that did not end keep running
        seqs, scores, origin = _gather(cand, keep), alive.gather(1, keep), parent.gather(1, keep)
        hyps.add(cand, top, ends, length, length_penalty, is_open, early_stopping)
        best_running = scores[:, :1] / length**length_penalty
        is_open = is_open & (best_running > hyps.worst()).any(-1, keepdim=True)
        if not bool(is_open.any()) or bool(ends.all()) or (early_stopping and bool(hyps.done.all())):
            break
        stepper.select((origin + torch.arange(batch, device=dev)[:, None] * k).flatten())
        logits = stepper.step(seqs[:, :, -1].flatten())
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
        """(B, n): each item's best hypothesis, cropped to the longest among them."""
        n = int(self.lengths[:, 0].max())
        return self.seqs[:, 0, :n]
