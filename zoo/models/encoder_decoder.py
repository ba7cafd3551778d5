"""What every encoder-decoder model shares: the forward contract and decoding.

T5 (Raffel et al., 2020) and BART (Lewis et al., 2020) differ in their embeddings, norms and head,
not in how they are run. A subclass defines `encode` and `decode`; this base turns them into

- `forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)` → logits, the
  Hugging Face keyword contract;
- `generate(...)`: greedy search, sampling (temperature, top-k, nucleus top-p), or beam search, all
  incremental over a `KVCache`; a thin entry to `zoo.generation`, where decoding for every family
  lives (its `EncoderDecoderStepper` encodes once and runs the decoder from the start token).
"""

from __future__ import annotations

from typing import Optional

import torch

from zoo.models.base import FeatureModel, Seq2SeqModel, ZooModel


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
        from zoo.generation import Sampling, generate_ids  # zoo.generation imports the models

        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        sampling = Sampling(temperature, top_k, top_p, generator) if do_sample else Sampling()
        new = generate_ids(self, input_ids, attention_mask, max_new_tokens=max_new_tokens, sampling=sampling,
                           num_beams=num_beams, eos_token_id=eos, use_cache=use_cache,
                           length_penalty=length_penalty, early_stopping=early_stopping)  # (B, n)
        start = new.new_full((new.shape[0], 1), self.config.decoder_start_token_id)
        return torch.cat([start, new], dim=1)
