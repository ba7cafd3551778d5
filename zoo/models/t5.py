"""T5: the Text-to-Text Transfer Transformer (Raffel et al., 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer"), and its v1.1 revision.

An encoder-decoder of pre-norm blocks with RMSNorm ("layer norm" without mean or bias), no biases
anywhere, and no absolute positions: each stack learns a relative-position bias table (bucketed
key−query distances, bidirectional in the encoder, causal in the decoder), computed once and shared
by all its layers. Attention scores are not scaled by 1/√d (the scale is folded into the
initialisation), and d_kv·heads may differ from d_model.

- v1.0: ReLU MLP, input embedding tied to the output head, whose input is rescaled by d_model^-½.
- v1.1: gated-GELU MLP (GEGLU, tanh approximation), untied head without the rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn

from zoo.blocks import (
    AttentionConfig, AttnImpl, BlockConfig, DecoderStack, EncoderStack, KVCache, MLPConfig, NormConfig, NormImpl,
    StackConfig,
)
from zoo.blocks.config import Activation
from zoo.models.base import mean_over_tokens
from zoo.models.encoder_decoder import EncoderDecoderLM


@dataclass
class T5Config:
    """Every field is a YAML key under the model's `config:`. Defaults are t5-small (v1.0).

    Args:
        vocab_size: number of token ids (linked from the data module by the CLI).
        d_model: residual width. d_kv: per-head width (d_kv·n_head need not equal d_model).
        d_ff: MLP hidden width. n_layer: encoder blocks. n_decoder_layer: decoder blocks (None = n_layer).
        n_head: attention heads.
        activation: MLP activation ("relu" in v1.0, "gelu_tanh" in v1.1).
        gated_mlp: gated MLP (v1.1's "gated-gelu" is gelu_tanh + gated).
        relative_num_buckets, relative_max_distance: the relative-position buckets.
        norm_eps: RMSNorm epsilon.
        tie_embeddings: share the token embedding with the output head.
        scale_decoder_outputs: multiply the decoder output by d_model^-½ before the head
            (None = when tied, as T5 v1.0 does).
        dropout: embedding/residual/MLP dropout. attn_dropout: dropout on attention weights.
        pad_token_id, eos_token_id, decoder_start_token_id: special ids (T5: 0, 1, 0).
        attn_impl: attention backend, "eager" | "torch" | "triton". norm_impl: "torch" | "triton".
        init_factor: scale of T5's initialisation (Mesh TensorFlow's `initializer_factor`).
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    n_layer: int = 6
    n_decoder_layer: Optional[int] = None
    n_head: int = 8
    activation: Activation = "relu"
    gated_mlp: bool = False
    relative_num_buckets: int = 32
    relative_max_distance: int = 128
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    scale_decoder_outputs: Optional[bool] = None
    dropout: float = 0.1
    attn_dropout: float = 0.1
    pad_token_id: int = 0
    eos_token_id: Optional[int] = 1
    decoder_start_token_id: int = 0
    attn_impl: AttnImpl = "torch"
    norm_impl: NormImpl = "torch"
    init_factor: float = 1.0

    def __post_init__(self):
        from zoo.models.validation import check_model_config

        check_model_config(self, positive=("vocab_size", "d_model", "d_kv", "d_ff", "n_layer", "n_decoder_layer",
                                           "n_head", "relative_num_buckets", "relative_max_distance"))

    def encoder_stack(self) -> StackConfig:
        """Pre-norm RMSNorm blocks, no biases, unscaled scores, one relative-position table per stack."""
        attention = AttentionConfig(self.n_head, head_dim=self.d_kv, bias=False, scale=1.0,
                                    dropout=self.attn_dropout, impl=self.attn_impl)
        mlp = MLPConfig(self.d_ff, self.activation, self.gated_mlp, bias=False, dropout=self.dropout)
        norm = NormConfig("rmsnorm", self.norm_eps, False, self.norm_impl)
        block = BlockConfig(self.d_model, attention, mlp, norm, prenorm=True, dropout=self.dropout)
        return StackConfig(self.n_layer, block, "t5", t5_num_buckets=self.relative_num_buckets,
                           t5_max_distance=self.relative_max_distance)

    def decoder_stack(self) -> StackConfig:
        enc = self.encoder_stack()
        return replace(enc, n_layer=self.n_decoder_layer or self.n_layer,
                       block=replace(enc.block, causal=True, cross_attention=True))


class T5(EncoderDecoderLM):
    """T5 encoder-decoder: `forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)`
    → logits (B, T, V); `generate(...)` → decoder ids (see `EncoderDecoderLM`).

    Args:
        config: the architecture (see `T5Config`).
    """

    family = "t5"

    def __init__(self, config: Optional[T5Config] = None):
        super().__init__()
        self.config = c = config or T5Config()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = EncoderStack(c.encoder_stack())
        self.decoder = DecoderStack(c.decoder_stack())
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @property
    def scales_decoder_outputs(self) -> bool:
        s = self.config.scale_decoder_outputs
        return self.config.tie_embeddings if s is None else s

    def _init_weights(self) -> None:
        """Mesh TensorFlow's initialisation, which stands in for the missing 1/√d score scale."""
        c, f = self.config, self.config.init_factor
        for name, module in self.named_modules():
            if module is self.embed_tokens or module is self.lm_head:
                nn.init.normal_(module.weight, std=f)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=self._linear_std(name, module))
            elif isinstance(module, nn.Embedding):  # the relative-position tables
                nn.init.normal_(module.weight, std=f * c.d_model**-0.5)

    def _linear_std(self, name: str, module: nn.Linear) -> float:
        c, f = self.config, self.config.init_factor
        if name.endswith("q_proj"):
            return f * (c.d_model * c.d_kv) ** -0.5
        if name.endswith("o_proj"):
            return f * (c.n_head * c.d_kv) ** -0.5
        if name.endswith("down_proj"):
            return f * c.d_ff**-0.5
        return f * module.in_features**-0.5  # k, v, gate, up: d_model^-½

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encoder output (B, S, C) for input_ids (B, S); attention_mask (B, S), 1 = real token."""
        mask = attention_mask.bool() if attention_mask is not None else None
        x = self.drop(self.embed_tokens(input_ids))
        return self.drop(self.encoder(x, key_padding_mask=mask))

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
        x = self.drop(self.embed_tokens(decoder_input_ids))
        x = self.decoder(x, key_padding_mask=dmask, context=encoder_hidden_states, context_mask=mask, cache=cache)
        x = self.drop(x)  # (B, T, C)
        if self.scales_decoder_outputs:
            x = x * self.config.d_model**-0.5
        return self.lm_head(x)  # (B, T, V)

    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C): the mean of the encoder's states over real tokens (Sentence-T5's pooling)."""
        return mean_over_tokens(self.encode(input_ids, attention_mask), attention_mask)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.embed_tokens.weight] + ([] if self.config.tie_embeddings else [self.lm_head.weight])
