"""GPT: a decoder-only transformer language model.

The default is GPT-2 (Radford et al., 2019): learned positions, pre-norm LayerNorm, tanh-GELU MLP,
tied input/output embeddings. The LLaMA/Mistral family (Touvron et al., 2023; Jiang et al., 2023)
is the same model configured with RoPE, RMSNorm, a SwiGLU MLP, grouped-query attention, an
optional sliding window and an untied head. ALiBi and sinusoidal positions are one key away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import nn

from zoo.blocks import (
    AttentionConfig, AttnImpl, BlockConfig, DecoderStack, KVCache, LearnedPositions, MLPConfig, NormConfig, NormImpl,
    SinusoidalPositions, StackConfig,
)
from zoo.blocks.config import Activation, NormKind
from zoo.blocks.loss import linear_cross_entropy
from zoo.models.base import CausalLMModel, FeatureModel, ZooModel, last_token, normal_init

Position = Literal["learned", "sinusoidal", "rope", "alibi", "none"]


@dataclass
class GPTConfig:
    """Every field is a YAML key under the model's `config:`.

    Args:
        vocab_size: number of token ids (linked from the data module by the CLI).
        max_seq_len: longest context; sizes the learned/sinusoidal position table.
        d_model: residual width. n_layer: blocks. n_head: query heads.
        n_kv_head: key/value heads, fewer than n_head for grouped-query attention (None = n_head).
        head_dim: per-head width (None = d_model // n_head).
        d_ff: MLP hidden width (None = 4·d_model).
        activation: MLP activation; with gated_mlp=True, silu is SwiGLU and gelu is GEGLU.
        gated_mlp: use a gated (GLU) MLP.
        norm: "layernorm" or "rmsnorm". norm_eps: its epsilon.
        position: "learned", "sinusoidal", "rope", "alibi" or "none".
        rope_theta: RoPE base frequency.
        window: sliding-window size (each token sees the previous `window` tokens); None = full.
        bias: biases in the attention and MLP projections (GPT-2 yes, LLaMA no).
        tie_embeddings: share the token embedding with the output head.
        dropout: residual/embedding/MLP dropout. attn_dropout: dropout on attention weights.
        attn_impl: attention backend, "eager" | "torch" | "triton".
        norm_impl: norm backend, "torch" | "triton".
        init_std: std of the normal initialisation.
    """

    vocab_size: int = 50257
    max_seq_len: int = 1024
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: Optional[int] = None
    head_dim: Optional[int] = None
    d_ff: Optional[int] = None
    activation: Activation = "gelu_tanh"
    gated_mlp: bool = False
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    position: Position = "learned"
    rope_theta: float = 10000.0
    window: Optional[int] = None
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    attn_impl: AttnImpl = "torch"
    norm_impl: NormImpl = "torch"
    init_std: float = 0.02

    def __post_init__(self):
        from zoo.models.validation import check_model_config

        heads_split_width = (("n_head", "d_model"),) if self.head_dim is None else ()
        check_model_config(self, positive=("vocab_size", "max_seq_len", "d_model", "n_layer", "n_head", "n_kv_head",
                                           "head_dim", "d_ff", "window"),
                           divides=(("n_kv_head", "n_head"), *heads_split_width), at_most=(("window", "max_seq_len"),))

    def stack(self) -> StackConfig:
        """The decoder stack this config describes (pre-norm, causal)."""
        relative = self.position if self.position in ("rope", "alibi") else "none"
        attention = AttentionConfig(self.n_head, self.n_kv_head, self.head_dim, self.bias, window=self.window,
                                    dropout=self.attn_dropout, impl=self.attn_impl)
        # GPT-2 and nanoGPT drop out after the MLP's projection (the residual dropout); the zoo has also
        # dropped out after its activation since the start, and keeps doing so (`mlp.dropout`).
        mlp = MLPConfig(self.d_ff or 4 * self.d_model, self.activation, self.gated_mlp, self.bias, self.dropout)
        norm = NormConfig(self.norm, self.norm_eps, True, self.norm_impl)
        block = BlockConfig(self.d_model, attention, mlp, norm, prenorm=True, dropout=self.dropout, causal=True)
        return StackConfig(self.n_layer, block, relative, self.rope_theta)


class GPT(ZooModel, CausalLMModel, FeatureModel):
    """Decoder-only language model: `forward(input_ids, attention_mask=None)` → logits (B, T, V);
    `forward(input_ids, labels=labels)` → the mean next-token cross-entropy, computed without the logits.

    Args:
        config: the architecture (see `GPTConfig`).
    """

    family = "gpt"
    loss_chunk_size = 512  # tokens per chunk of the fused head + loss (zoo.blocks.loss); a speed knob only

    def __init__(self, config: Optional[GPTConfig] = None):
        super().__init__()
        self.config = c = config or GPTConfig()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.embed_positions = None
        if c.position == "learned":
            self.embed_positions = LearnedPositions(c.max_seq_len, c.d_model)
        elif c.position == "sinusoidal":
            self.embed_positions = SinusoidalPositions(c.max_seq_len, c.d_model)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.decoder = DecoderStack(c.stack())
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(lambda m: normal_init(m, c.init_std))
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/√(2·layers)
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=c.init_std / (2 * c.n_layer) ** 0.5)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: Optional[torch.Tensor] = None,  # (B, past + T), 1 = real token
        position_ids: Optional[torch.Tensor] = None,  # (B, T)
        past_key_values: Optional[KVCache] = None,  # updated in place when given
        labels: Optional[torch.Tensor] = None,  # (B, T) target of each position (already shifted); -100 = ignore
        segment_ids: Optional[torch.Tensor] = None,  # (B, T) example of each token in a packed block
    ) -> torch.Tensor:
        """Logits (B, T, V); with `labels`, instead the scalar mean cross-entropy over the non-ignored
        positions, equal to `F.cross_entropy(logits.flatten(0, 1), labels.flatten())` but fused with the
        head, so the (B, T, V) logits are never materialised (the fast way to train). With `segment_ids`
        (packed examples; pass `position_ids` restarting per example too) no token attends across examples."""
        x = self._hidden_states(input_ids, attention_mask, position_ids, past_key_values, segment_ids)  # (B, T, C)
        if labels is not None:
            return linear_cross_entropy(x, self.lm_head.weight, labels, chunk_size=self.loss_chunk_size)
        return self.lm_head(x)  # (B, T, V)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The final hidden states (B, T, C): `forward` without the head (what a classifier reads)."""
        return self._hidden_states(input_ids, attention_mask, None, None)

    def _hidden_states(self, input_ids, attention_mask, position_ids, past_key_values, segment_ids=None) -> torch.Tensor:
        B, T = input_ids.shape
        past = past_key_values.seq_len if past_key_values is not None else 0
        if past + T > self.config.max_seq_len and self.config.position in ("learned", "sinusoidal"):
            raise ValueError(f"sequence of {past + T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None].expand(B, -1)
        x = self.embed_tokens(input_ids)  # (B, T, C)
        if self.embed_positions is not None:
            x = x + self.embed_positions(position_ids)
        x = self.drop(x)
        mask = attention_mask.bool() if attention_mask is not None else None
        return self.decoder(x, key_padding_mask=mask, position_ids=position_ids, cache=past_key_values,
                            segment_ids=segment_ids)

    @property
    def feature_dim(self) -> int:
        return self.config.d_model

    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C): the final hidden state of each text's last real token (right padding)."""
        return last_token(self._hidden_states(input_ids, attention_mask, None, None), attention_mask)

    def embedding_parameters(self) -> list[nn.Parameter]:
        tables = [self.embed_tokens.weight]
        if isinstance(self.embed_positions, LearnedPositions):
            tables.append(self.embed_positions.weight)
        return tables + ([] if self.config.tie_embeddings else [self.lm_head.weight])
