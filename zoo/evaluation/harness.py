"""`ZooLM`: any zoo decoder (GPT, LLaMA, Mistral) or encoder-decoder (T5, BART) as an `lm_eval` model.

It follows the harness's own Hugging Face wrapper (`lm_eval.models.huggingface.HFLM`, lm-eval 0.4.x)
step for step, so that a zoo model and its `zoo.to_hf` export score the same:

- tokenization: `TemplateLM.loglikelihood` / `_encode_pair` (inherited: context and continuation
  encoded together and split for decoders, apart for encoder-decoders; trailing context spaces move
  to the continuation; an empty context becomes the prefix token). `tok_encode` applies the
  tokenizer's post-processor (HF's `add_special_tokens=True`) unless the text already starts with the
  prefix token; no BOS is added beyond what the tokenizer itself adds, as HFLM by default.
- special ids: the roles `zoo.to_hf` writes in tokenizer_config.json (`zoo.interop.hf.special_tokens`):
  eot = eos; prefix = bos, else eos.
- `max_length`: the config's `max_seq_len` (HF's `n_positions` / `max_position_embeddings`), else 2048.
- `loglikelihood_rolling`: `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`, the
  windows of all documents scored `batch_size` at a time, one sum per document.
- `_loglikelihood_tokens`: requests sorted longest first (`Collator`), batches of `batch_size`
  right-padded with 0 and run without an attention mask (decoders) or with the encoder's mask and
  `shift_right(continuation)` as decoder input (encoder-decoders), float32 log-softmax, greedy check.
  HFLM's one-token-continuation logits cache only reuses a forward pass; it changes no score.
- `generate_until`: greedy (or sampled, when the task asks) batched decoding through
  `zoo.generation.generate_batch`, stopping at the task's `until` strings and eos; context
  left-truncated to `max_length - max_gen_toks` for decoders.

`batch_size` is an int (HFLM's "auto" probes GPU memory; here pick one). Padding changes the shape of
the matrix products, so scores at different batch sizes agree to float rounding, as in HFLM.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError
from zoo.families import can, require
from zoo.models.base import Capability

try:
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
except ImportError as err:  # pragma: no cover - exercised without the extra
    raise ZooError("zoo evaluate needs the lm-evaluation-harness: pip install 'zoo[eval]'") from err

DEFAULT_MAX_LENGTH = 2048  # HFLM's, for models without a position limit


def pad_right(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """(B, width) long: rows right-padded with 0, as lm_eval's `pad_and_concat` (which imports transformers)."""
    return torch.stack([F.pad(r, (0, width - len(r))) for r in rows])


def special_ids(tokenizer) -> dict[str, int]:
    """{"bos": id, "eos": id, ...}: the roles `zoo.to_hf` writes, so HF's tokenizer has the same ones."""
    from zoo.interop.hf import special_tokens

    return {role.removesuffix("_token"): tokenizer.token_to_id(tok) for role, tok in special_tokens(tokenizer).items()}


def model_max_length(model: nn.Module) -> int:
    """What HFLM reads off the export: `max_seq_len` (written as `n_positions` / `max_position_embeddings`,
    RoPE models included: the length they were trained at), else 2048 (T5: relative positions)."""
    return getattr(model.config, "max_seq_len", None) or DEFAULT_MAX_LENGTH


class ZooLM(TemplateLM):
    """An `lm_eval` language model over a zoo model and its `tokenizers.Tokenizer`.

    Args:
        model: a zoo model with the causal LM or seq2seq capability.
        tokenizer: its tokenizer (`tokenizers.Tokenizer`).
        batch_size: requests (or rolling windows) per forward pass.
        max_length: context length in tokens (default: the config's `max_seq_len`, else 2048).
        device: where the model runs.
        max_gen_toks: default generation length for `generate_until` (HFLM: 256).
    """

    def __init__(self, model: nn.Module, tokenizer, batch_size: int = 1, max_length: Optional[int] = None,
                 device: str = "cpu", max_gen_toks: int = 256):
        super().__init__()
        if not can(model, Capability.SEQ2SEQ):
            require(model, Capability.CAUSAL_LM, "lm-eval harness tasks")
        if tokenizer is None:
            raise ZooError("lm-eval harness tasks need the model's tokenizer; save tokenizer.json beside the weights")
        self.backend = "seq2seq" if can(model, Capability.SEQ2SEQ) else "causal"
        self._device = torch.device(device)
        self.model = model.eval().to(self._device)
        self.tokenizer = tokenizer
        ids = special_ids(tokenizer)
        if ids.get("eos") is None and ids.get("bos") is None:
            raise ZooError("the tokenizer has no end-of-text (or begin) token, which lm-eval needs as prefix")
        self._eot = ids.get("eos", ids.get("bos"))
        self._prefix = ids.get("bos", self._eot)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ZooError(f"--batch_size {batch_size}: must be at least 1")
        self.max_length = max_length or model_max_length(model)
        self.max_gen_toks = max_gen_toks

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def prefix_token_id(self) -> int:
        return self._prefix

    @property
    def tokenizer_name(self) -> str:
        return "zoo"

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None,
                   left_truncate_len: Optional[int] = None, **kwargs) -> list[int]:
        special = True if add_special_tokens is None else add_special_tokens
        if add_special_tokens is None and string.startswith(self.tok_decode([self.prefix_token_id], False)):
            special = False  # HFLM: a text that already starts with the prefix token gets no second one
        ids = self.tokenizer.encode(string, add_special_tokens=special).ids
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _logits(self, inputs: torch.Tensor, encoder_mask: Optional[torch.Tensor] = None,
                continuations: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, V) logits: decoder-only over `inputs`; encoder-decoder over the continuations."""
        if self.backend == "causal":
            return self.model(inputs)
        return self.model(inputs, attention_mask=encoder_mask, decoder_input_ids=self.model.shift_right(continuations))

    def _batch(self, chunk) -> tuple[torch.Tensor, dict, list[int], int]:
        """Right-padded inputs of a chunk of (request, context ids, continuation ids), as HFLM builds them."""
        inps, conts, masks, inplens = [], [], [], []
        for _, context, continuation in chunk:
            assert context and continuation and len(continuation) <= self.max_length
            if self.backend == "causal":
                inp = (context + continuation)[-(self.max_length + 1):][:-1]
            else:
                inp = context[-self.max_length:]
                conts.append(torch.tensor(continuation[-self.max_length:], dtype=torch.long, device=self.device))
            inps.append(torch.tensor(inp, dtype=torch.long, device=self.device))
            masks.append(torch.ones_like(inps[-1]))
            inplens.append(len(inp))
        width = max(inplens)
        kwargs = {}
        if self.backend == "seq2seq":
            kwargs = {"encoder_mask": pad_right(masks, width), "continuations": pad_right(conts, max(map(len, conts)))}
        return pad_right(inps, width), kwargs, inplens, width

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                              override_bs: Optional[int] = None) -> list[tuple[float, bool]]:
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
        results = []
        for chunk in order.get_batched(n=override_bs or self.batch_size):
            inputs, kwargs, inplens, width = self._batch(chunk)
            logp = F.log_softmax(self._logits(inputs, **kwargs).float(), dim=-1)  # (B, T, V)
            for (request, _, continuation), row, inplen in zip(chunk, logp, inplens):
                n = len(continuation)
                # decoder-only: the continuation's positions end at the row's last real input
                row = row[inplen - n:inplen] if self.backend == "causal" else row[:n]  # (n, V)
                target = torch.tensor(continuation, dtype=torch.long, device=row.device)
                greedy = bool((row.argmax(-1) == target).all())
                answer = (float(row.gather(-1, target[:, None]).sum()), greedy)
                results.append(answer)
                if request is not None:
                    self.cache_hook.add_partial("loglikelihood", request, answer)
        return order.get_original(results)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, counts = [], []
        for (text,) in (r.args for r in requests):
            rolling = lm_utils.get_rolling_token_windows(token_list=self.tok_encode(text),
                                                         prefix_token=self.prefix_token_id,
                                                         max_seq_len=self.max_length, context_len=1)
            mine = [(None,) + lm_utils.make_disjoint_window(w) for w in rolling]
            windows += mine
            counts.append(len(mine))
        scores = []
        for i in range(0, len(windows), self.batch_size):
            batch = windows[i:i + self.batch_size]
            scores += self._loglikelihood_tokens(batch, override_bs=len(batch))
        totals, start = [], 0
        for request, n in zip(requests, counts):
            totals.append(sum(s for s, _ in scores[start:start + n]))
            start += n
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, totals[-1])
        return totals

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from zoo.generation import Request, generate_batch

        order = Collator([r.args for r in requests], sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
                         group_by="gen_kwargs", group_fn=lambda r: r[1])
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        out = []
        for chunk in order.get_batched(n=self.batch_size):
            contexts, settings = zip(*chunk)
            kwargs: dict[str, Any] = dict(normalize_gen_kwargs(settings[0], self.max_gen_toks))
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = kwargs.pop("max_gen_toks")
            room = self.max_length - max_gen if self.backend == "causal" else self.max_length
            if room < 1:
                raise ZooError(f"generating {max_gen} tokens leaves no room for the prompt in a context of "
                               f"{self.max_length}")
            sample = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0.0)) > 0
            batch = [Request(self.tok_encode(c, left_truncate_len=room), max_tokens=max_gen,
                             temperature=float(kwargs["temperature"]) if sample else 0.0,
                             top_k=kwargs.get("top_k"), top_p=kwargs.get("top_p"), seed=0, stop=tuple(until))
                     for c in contexts]
            done = generate_batch(self.model, self.tokenizer, batch, eos_token_id=self.eot_token_id)
            for context, setting, completion in zip(contexts, settings, done):
                text = postprocess_generated_text(generation=completion.text, stop=until, think_end_token=None)
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, setting), text)
        return order.get_original(out)
