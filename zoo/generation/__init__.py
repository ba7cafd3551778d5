"""Decoding in one place, for decoder-only (GPT, LLaMA, Mistral) and encoder-decoder (T5, BART) models
alike: greedy, sampling (temperature, top-k, top-p) and beam search, batched over prompts of different
lengths with per-row settings and stopping.

- `sampling`: choosing a token from logits (`Sampling`, `filter_logits`, `next_token`, `pick`).
- `steppers`: what decoding needs from a model, one step at a time (`DecoderOnlyStepper`: prompt
  prefix then one token per step over the KV cache; `EncoderDecoderStepper`: memory once, decoder
  from the start token).
- `search`: token-by-token decoding with per-row stopping, and beam search, over any stepper.
- `decoding`: the entry points (`generate_ids`, `generate`, `generate_batch`).
- `session`: a running batch that requests join between steps (continuous batching, for serving).
"""

from zoo.generation.decoding import Completion, Request, eos_id, fill_id, generate, generate_batch, generate_ids
from zoo.generation.sampling import Sampling, filter_logits, next_token, pick
from zoo.generation.search import beam_search, token_by_token
from zoo.generation.steppers import (DecoderOnlyStepper, EncoderDecoderStepper, Stepper, context_limit, make_stepper,
                                     pad_prompts, stepper_class)

__all__ = ["Completion", "DecoderOnlyStepper", "EncoderDecoderStepper", "Request", "Sampling", "Stepper",
           "beam_search", "context_limit", "eos_id", "fill_id", "filter_logits", "generate", "generate_batch",
           "generate_ids", "make_stepper", "next_token", "pad_prompts", "pick", "stepper_class", "token_by_token"]
