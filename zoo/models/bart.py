"""BART: a denoising sequence-to-sequence model (Lewis et al., 2020, "BART: Denoising
Sequence-to-Sequence Pre-training for Natural Language Generation, Translation, and Comprehension").

A standard encoder-decoder transformer in the post-norm arrangement of BERT/GPT-1: learned absolute
positions (a table with two extra leading rows, so position p reads row p + 2), a LayerNorm on the
embeddings (`layernorm_embedding`), exact-GELU MLPs, biases everywhere, and an output head tied to
the shared token embedding plus a fixed `final_logits_bias`. `scale_embedding` multiplies token
embeddings by √d_model (off in bart-base/large, on in some descendants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn

from zoo.blocks import (
    AttentionConfig, AttnImpl, BlockConfig, DecoderStack, EncoderStack, KVCache, LayerNorm, LearnedPositions,
    MLPConfig, NormConfig, NormImpl, StackConfig,
)
from zoo.blocks.config import Activation
from zoo.models.base import mean_over_tokens, normal_init
from zoo.models.encoder_decoder import EncoderDecoderLM

POSITION_OFFSET = 2  # BART's position table keeps two leading rows that no position reads


@dataclass
class BartConfig:
    """Every field is a YAML key under the model's `config:`. Defaults are bart-base.

    Args:
        vocab_size: number of token ids (linked from the data module by the CLI).
        max_seq_len: longest encoder or decoder sequence (size of the position tables).
        d_model: residual width. n_layer: encoder blocks. n_decoder_layer: decoder blocks (None = n_layer).
        n_head: attention heads. d_ff: MLP hidden width (None = 4·d_model).
        n_decoder_head, d_decoder_ff: the decoder's heads and MLP width (None = as the encoder).
        activation: MLP activation (BART: exact "gelu").
        norm_eps: LayerNorm epsilon.
        scale_embedding: multiply token embeddings by √d_model.
        tie_embeddings: share the token embedding with the output head.
        dropout: embedding/residual dropout. attn_dropout: on attention weights.
            activation_dropout: inside the MLP, after the activation.
        pad_token_id, bos_token_id, eos_token_id, decoder_start_token_id: special ids (BART: 1, 0, 2, 2).
        attn_impl: attention backend, "eager" | "torch" | "triton". norm_impl: "torch" | "triton".
        init_std: std of the normal initialisation.
    """

    vocab_size: int = 50265
    max_seq_len: int = 1024
    d_model: int = 768
    n_layer: int = 6
    n_decoder_layer: Optional[int] = None
    n_head: int = 12
    d_ff: Optional[int] = 3072
    n_decoder_head: Optional[int] = None
    d_decoder_ff: Optional[int] = None
    activation: Activation = "gelu"
    norm_eps: float = 1e-5
    scale_embedding: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.1
    activation_dropout: float = 0.1
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: Optional[int] = 2
    decoder_start_token_id: int = 2
    attn_impl: AttnImpl = "torch"
    norm_impl: NormImpl = "torch"
    init_std: float = 0.02

    def __post_init__(self):
        from zoo.models.validation import check_model_config

        check_model_config(self, positive=("vocab_size", "max_seq_len", "d_model", "n_layer", "n_decoder_layer",
                                           "n_head", "d_ff", "n_decoder_head", "d_decoder_ff"),
                           divides=(("n_head", "d_model"), ("n_decoder_head", "d_model")))

    def encoder_stack(self) -> StackConfig:
        """Post-norm LayerNorm blocks with biases; `activation_dropout` inside the MLP, `dropout` on
        every residual branch."""
        attention = AttentionConfig(self.n_head, dropout=self.attn_dropout, impl=self.attn_impl)
        mlp = MLPConfig(self.d_ff or 4 * self.d_model, self.activation, dropout=self.activation_dropout)
        norm = NormConfig("layernorm", self.norm_eps, True, self.norm_impl)
        block = BlockConfig(self.d_model, attention, mlp, norm, prenorm=False, dropout=self.dropout)
        return StackConfig(self.n_layer, block, final_norm=False)

    def decoder_stack(self) -> StackConfig:
        enc = self.encoder_stack()
        attention = replace(enc.block.attention, n_head=self.n_decoder_head or self.n_head)
        mlp = replace(enc.block.mlp, d_ff=self.d_decoder_ff or enc.block.mlp.d_ff)
        block = replace(enc.block, attention=attention, mlp=mlp, causal=True, cross_attention=True)
        return replace(enc, n_layer=self.n_decoder_layer or self.n_layer, block=block)


class Bart(EncoderDecoderLM):
    """BART encoder-decoder: `forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)`
    → logits (B, T, V); `generate(...)` → decoder ids (see `EncoderDecoderLM`).

    Args:
        config: the architecture (see `BartConfig`).
    """

    family = "bart"

    def __init__(self, config: Optional[BartConfig] = None):
        super().__init__()
        self.config = c = config or BartConfig()
        self.max_target_positions = c.max_seq_len
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.encoder_positions = LearnedPositions(c.max_seq_len, c.d_model, offset=POSITION_OFFSET)
        self.decoder_positions = LearnedPositions(c.max_seq_len, c.d_model, offset=POSITION_OFFSET)
        self.encoder_embed_norm = LayerNorm(c.d_model, c.norm_eps, impl=c.norm_impl)
        self.decoder_embed_norm = LayerNorm(c.d_model, c.norm_eps, impl=c.norm_impl)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = EncoderStack(c.encoder_stack())
        self.decoder = DecoderStack(c.decoder_stack())
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, c.vocab_size))
        self.apply(lambda m: normal_init(m, c.init_std, position_tables=True))
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _embed(self, ids: torch.Tensor, positions: LearnedPositions, norm: LayerNorm, past: int = 0) -> torch.Tensor:
        B, T = ids.shape
        if past + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {past + T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        pos = torch.arange(past, past + T, device=ids.device)[None].expand(B, -1)
        x = self.embed_tokens(ids) * self.embed_scale + positions(pos)  # (B, T, C)
        return self.drop(norm(x))

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encoder output (B, S, C) for input_ids (B, S); attention_mask (B, S), 1 = real token."""
        mask = attention_mask.bool() if attention_mask is not None else None
        x = self._embed(input_ids, self.encoder_positions, self.encoder_embed_norm)
        return self.encoder(x, key_padding_mask=mask)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,  # (B, T), the new positions only when a cache is given
        encoder_hidden_states: torch.Tensor,  # (B, S, C)
        attention_mask: Optional[torch.Tensor] = None,  # (B, S), the encoder's padding
        decoder_attention_mask: Optional[torch.Tensor] = None,  # (B, past + T)
        cache: Optional[KVCache] = None,  # updated in place
    ) -> torch.Tensor:
        """Logits (B, T, V) of the decoder; with a `cache`, positions continue after the cached ones."""
        mask = attention_mask.bool() if attention_mask is not None else None
        dmask = decoder_attention_mask.bool() if decoder_attention_mask is not None else None
        past = cache.seq_len if cache is not None else 0
        x = self._embed(decoder_input_ids, self.decoder_positions, self.decoder_embed_norm, past)
        x = self.decoder(x, key_padding_mask=dmask, context=encoder_hidden_states, context_mask=mask, cache=cache)
        return self.lm_head(x) + self.final_logits_bias  # (B, T, V)

    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C): the mean of the encoder's states over real tokens."""
        return mean_over_tokens(self.encode(input_ids, attention_mask), attention_mask)

    def embedding_parameters(self) -> list[nn.Parameter]:
        tables = [self.embed_tokens.weight, self.encoder_positions.weight, self.decoder_positions.weight]
        return tables + ([] if self.config.tie_embeddings else [self.lm_head.weight])
