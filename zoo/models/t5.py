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

from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

from zoo.blocks import AttnImpl, DecoderStack, EncoderStack, KVCache, NormImpl
from zoo.blocks.mlp import Activation
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


class T5(EncoderDecoderLM):
    """T5 encoder-decoder: `forward(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)`
    → logits (B, T, V); `generate(...)` → decoder ids (see `EncoderDecoderLM`).

    Args:
        config: the architecture (see `T5Config`).
    """

    family = "t5"

    def __init__(self, config: T5Config = T5Config()):
        super().__init__()
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        stack = dict(
            relative_position="t5", t5_num_buckets=c.relative_num_buckets, t5_max_distance=c.relative_max_distance,
            d_model=c.d_model, n_head=c.n_head, head_dim=c.d_kv, d_ff=c.d_ff, activation=c.activation,
            gated_mlp=c.gated_mlp, norm="rmsnorm", norm_eps=c.norm_eps, prenorm=True, bias=False, scale=1.0,
            dropout=c.dropout, attn_dropout=c.attn_dropout, attn_impl=c.attn_impl, norm_impl=c.norm_impl,
        )
        self.encoder = EncoderStack(c.n_layer, **stack)
        self.decoder = DecoderStack(c.n_decoder_layer or c.n_layer, cross_attention=True, **stack)
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

    def config_dict(self) -> dict:
        return asdict(self.config)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the token embedding and an untied head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n
