"""BERT: a bidirectional transformer encoder pre-trained as a masked language model (Devlin et al.,
2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding").

Post-norm blocks (x = LN(x + f(x))) with exact-GELU MLPs; the input is the sum of token, learned
position and token-type (segment) embeddings, normalised by a LayerNorm. The masked-LM head is a
transform (dense → activation → LayerNorm) followed by a decoder tied to the token embedding plus
an output bias. The pooler (dense → tanh on the [CLS] position) feeds sentence-level classifiers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

from zoo.blocks import ACTIVATIONS, AttnImpl, EncoderStack, LayerNorm, LearnedPositions, NormImpl
from zoo.blocks.mlp import Activation


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


class Bert(nn.Module):
    """BERT encoder with its masked-LM head: `forward(input_ids, attention_mask, token_type_ids)`
    → MLM logits (B, T, V). `encode` gives the hidden states (B, T, C), `pooled` the pooler
    output (B, C).

    Args:
        config: the architecture (see `BertConfig`).
    """

    family = "bert"

    def __init__(self, config: BertConfig = BertConfig()):
        super().__init__()
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.embed_positions = LearnedPositions(c.max_seq_len, c.d_model)
        self.embed_token_types = nn.Embedding(c.type_vocab_size, c.d_model)
        self.embed_norm = LayerNorm(c.d_model, c.norm_eps, impl=c.norm_impl)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = EncoderStack(
            c.n_layer, d_model=c.d_model, n_head=c.n_head, d_ff=c.d_ff or 4 * c.d_model, activation=c.activation,
            norm="layernorm", norm_eps=c.norm_eps, prenorm=False, final_norm=False, bias=True,
            dropout=c.dropout, attn_dropout=c.attn_dropout, attn_impl=c.attn_impl, norm_impl=c.norm_impl,
        )
        for block in self.encoder.layers:  # BERT has no dropout between its MLP's two layers
            block.mlp.dropout.p = 0.0
        self.act = ACTIVATIONS[c.activation]
        self.head_transform = nn.Linear(c.d_model, c.d_model)
        self.head_norm = LayerNorm(c.d_model, c.norm_eps, impl=c.norm_impl)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=True)
        self.pooler = nn.Linear(c.d_model, c.d_model) if c.pooler else None
        self.apply(self._init_weights)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding, LearnedPositions)):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

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

    def config_dict(self) -> dict:
        return asdict(self.config)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without token/position/type embeddings and an untied decoder."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel() + self.embed_positions.weight.numel()
            n -= self.embed_token_types.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n
