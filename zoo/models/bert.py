"""BERT: a bidirectional transformer encoder pre-trained as a masked language model (Devlin et al.,
2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding").

Post-norm blocks (x = LN(x + f(x))) with exact-GELU MLPs; the input is the sum of token, learned
position and token-type (segment) embeddings, normalised by a LayerNorm. The masked-LM head is a
transform (dense → activation → LayerNorm) followed by a decoder tied to the token embedding plus
an output bias. The pooler (dense → tanh on the [CLS] position) feeds sentence-level classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from zoo.blocks import (
    ACTIVATIONS, AttentionConfig, AttnImpl, BlockConfig, EncoderStack, LayerNorm, LearnedPositions, MLPConfig,
    NormConfig, NormImpl, StackConfig,
)
from zoo.blocks.config import Activation
from zoo.models.base import FeatureModel, MaskedLMModel, ZooModel, normal_init


@dataclass
class BertConfig:
    """Every field is a YAML key under the model's `config:`. Defaults are bert-base.

    Args:
        vocab_size: number of token ids (linked from the data module by the CLI).
        max_seq_len: longest input (size of the position table).
        type_vocab_size: number of token types (segments A/B).
        d_model: residual width. n_layer: blocks. n_head: attention heads.
        d_ff: MLP hidden width (None = 4·d_model).
        activation: MLP and MLM-transform activation (BERT: exact "gelu").
        norm_eps: LayerNorm epsilon (BERT: 1e-12).
        tie_embeddings: share the token embedding with the MLM decoder.
        pooler: build the [CLS] pooler (dense + tanh); checkpoints of BertForMaskedLM have none.
        dropout: embedding/residual dropout. attn_dropout: dropout on attention weights.
        pad_token_id: the padding id (its embedding row starts at zero).
        attn_impl: attention backend, "eager" | "torch" | "triton". norm_impl: "torch" | "triton".
        init_std: std of the normal initialisation.
    """

    vocab_size: int = 30522
    max_seq_len: int = 512
    type_vocab_size: int = 2
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    d_ff: Optional[int] = None
    activation: Activation = "gelu"
    norm_eps: float = 1e-12
    tie_embeddings: bool = True
    pooler: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.1
    pad_token_id: int = 0
    attn_impl: AttnImpl = "torch"
    norm_impl: NormImpl = "torch"
    init_std: float = 0.02

    def __post_init__(self):
        from zoo.models.validation import check_model_config

        check_model_config(self, positive=("vocab_size", "max_seq_len", "type_vocab_size", "d_model", "n_layer",
                                           "n_head", "d_ff"), divides=(("n_head", "d_model"),))


    def stack(self) -> StackConfig:
        """The encoder: post-norm blocks, biases everywhere, no dropout inside the MLP (as BERT)."""
        attention = AttentionConfig(self.n_head, dropout=self.attn_dropout, impl=self.attn_impl)
        mlp = MLPConfig(self.d_ff or 4 * self.d_model, self.activation, dropout=0.0)
        norm = NormConfig("layernorm", self.norm_eps, True, self.norm_impl)
        block = BlockConfig(self.d_model, attention, mlp, norm, prenorm=False, dropout=self.dropout)
        return StackConfig(self.n_layer, block, final_norm=False)


class Bert(ZooModel, MaskedLMModel, FeatureModel):
    """BERT encoder with its masked-LM head: `forward(input_ids, attention_mask, token_type_ids)`
    → MLM logits (B, T, V). `encode` gives the hidden states (B, T, C), `pooled` the pooler
    output (B, C).

    Args:
        config: the architecture (see `BertConfig`).
    """

    family = "bert"

    def __init__(self, config: Optional[BertConfig] = None):
        super().__init__()
        self.config = c = config or BertConfig()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.embed_positions = LearnedPositions(c.max_seq_len, c.d_model)
        self.embed_token_types = nn.Embedding(c.type_vocab_size, c.d_model)
        self.embed_norm = LayerNorm(c.d_model, c.norm_eps, impl=c.norm_impl)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = EncoderStack(c.stack())
        self.act = ACTIVATIONS[c.activation]
        self.head_transform = nn.Linear(c.d_model, c.d_model)
        self.head_norm = LayerNorm(c.d_model, c.norm_eps, impl=c.norm_impl)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=True)
        self.pooler = nn.Linear(c.d_model, c.d_model) if c.pooler else None
        self.apply(lambda m: normal_init(m, c.init_std, position_tables=True))
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def encode(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: Optional[torch.Tensor] = None,  # (B, T), 1 = real token
        token_type_ids: Optional[torch.Tensor] = None,  # (B, T), segment ids (default all 0)
    ) -> torch.Tensor:
        """Final hidden states (B, T, C)."""
        B, T = input_ids.shape
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)[None].expand(B, -1)
        x = self.embed_tokens(input_ids) + self.embed_token_types(token_type_ids) + self.embed_positions(positions)
        x = self.drop(self.embed_norm(x))  # (B, T, C)
        mask = attention_mask.bool() if attention_mask is not None else None
        return self.encoder(x, key_padding_mask=mask)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooler on hidden states (B, T, C): tanh(dense(h[:, 0])) → (B, C)."""
        if self.pooler is None:
            raise ValueError("this BERT has no pooler (config.pooler=False); build it with pooler=True")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def pooled(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Pooler output (B, C) of the [CLS] position, for sentence-level classification."""
        return self.pool(self.encode(input_ids, attention_mask, token_type_ids))

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The masked-LM head on hidden states (B, T, C) → logits (B, T, V)."""
        return self.lm_head(self.head_norm(self.act(self.head_transform(hidden))))

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: Optional[torch.Tensor] = None,  # (B, T), 1 = real token
        token_type_ids: Optional[torch.Tensor] = None,  # (B, T)
    ) -> torch.Tensor:
        return self.mlm_logits(self.encode(input_ids, attention_mask, token_type_ids))  # (B, T, V)

    @property
    def feature_dim(self) -> int:
        return self.config.d_model

    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C): the pooler output of the [CLS] position (what BERT's classifiers read)."""
        return self.pool(self.encode(input_ids, attention_mask, token_type_ids))

    def embedding_parameters(self) -> list[nn.Parameter]:
        tables = [self.embed_tokens.weight, self.embed_positions.weight, self.embed_token_types.weight]
        return tables + ([] if self.config.tie_embeddings else [self.lm_head.weight])
