"""The typed model contract: what every zoo model is, and the capabilities a model may offer.

Every model is a `ZooModel`: it has a `config` (a dataclass, saved in checkpoints), a `family` name
(the key of its spec in `zoo.families`), and one parameter count. A capability is an abstract
interface the model class inherits; code that needs one asks by type (`isinstance(model,
Seq2SeqModel)`, or `zoo.families.require(model, Capability.SEQ2SEQ)`), never by `hasattr` or a
family name, so a model lacking it fails with a clear error instead of a silent reroute.

| capability | interface | methods |
| --- | --- | --- |
| causal LM | `CausalLMModel` | `forward(input_ids, attention_mask, position_ids, past_key_values, labels)`, `hidden_states` |
| masked LM | `MaskedLMModel` | `forward(input_ids, attention_mask, token_type_ids)`, `encode`, `mlm_logits` |
| seq2seq | `Seq2SeqModel` | `encode`, `decode`, `shift_right`, `forward(..., decoder_input_ids, ...)` |
| features | `FeatureModel` | `features(input_ids, attention_mask)` → (B, feature_dim) |
| image-text | `ImageTextModel` | `encode_image`, `encode_text` |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from zoo.blocks import KVCache, LearnedPositions


class Capability(str, Enum):
    """What a model can do; each is one interface below."""

    CAUSAL_LM = "causal_lm"
    MASKED_LM = "masked_lm"
    SEQ2SEQ = "seq2seq"
    FEATURES = "features"
    IMAGE_TEXT = "image_text"


class ZooModel(nn.Module):
    """Base of every zoo model: `config`, `family`, and the parameter count.

    Subclasses name what `num_parameters(non_embedding=True)` leaves out in `embedding_parameters()`.
    """

    family: ClassVar[str]
    config: Any

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Token/position tables (and an untied output head): not counted as "non-embedding"."""
        return []

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count (shared tensors once); by default without the embedding tables, the usual
        scaling measure (Kaplan et al., 2020)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            seen = {id(p): p for p in self.embedding_parameters()}
            n -= sum(p.numel() for p in seen.values())
        return n


def normal_init(module: nn.Module, std: float, position_tables: bool = False) -> None:
    """The common initialisation (GPT-2, BERT, BART, CLIP): normal(0, std) weights of linear, embedding
    and convolution layers (and learned position tables, with `position_tables`), zero biases, zero
    padding rows. Use as `self.apply(lambda m: normal_init(m, std))`."""
    kinds = (nn.Linear, nn.Embedding, nn.Conv2d) + ((LearnedPositions,) if position_tables else ())
    if isinstance(module, kinds):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


class CausalLMModel(ABC):
    """Next-token prediction over a KV cache: GPT, LLaMA, Mistral."""

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, past_key_values: Optional[KVCache] = None,
                labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (B, T, V), or the mean cross-entropy against `labels`."""

    @abstractmethod
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Final hidden states (B, T, C)."""


class MaskedLMModel(ABC):
    """Bidirectional encoder with a masked-LM head: BERT."""

    @abstractmethod
    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
               token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Final hidden states (B, T, C)."""

    @abstractmethod
    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The masked-LM head on hidden states → logits (B, T, V)."""


class Seq2SeqModel(ABC):
    """Encoder-decoder: T5, BART. The config carries pad, eos and decoder-start ids."""

    max_target_positions: Optional[int] = None

    @abstractmethod
    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encoder output (B, S, C)."""

    @abstractmethod
    def decode(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
               attention_mask: Optional[torch.Tensor] = None, decoder_attention_mask: Optional[torch.Tensor] = None,
               cache: Optional[KVCache] = None) -> torch.Tensor:
        """Decoder logits (B, T, V)."""

    @abstractmethod
    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing decoder inputs for `labels`."""


class FeatureModel(ABC):
    """One vector per text (B, feature_dim): what a classifier head or an embedding endpoint reads."""

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Width of `features`."""

    @abstractmethod
    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, feature_dim) for right-padded `input_ids` (B, T)."""


class ImageTextModel(ABC):
    """Images and texts in one embedding space: CLIP."""

    @abstractmethod
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → L2-normalised embeddings (B, P)."""

    @abstractmethod
    def encode_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T) → L2-normalised embeddings (B, P)."""


INTERFACES: dict[Capability, type] = {
    Capability.CAUSAL_LM: CausalLMModel,
    Capability.MASKED_LM: MaskedLMModel,
    Capability.SEQ2SEQ: Seq2SeqModel,
    Capability.FEATURES: FeatureModel,
    Capability.IMAGE_TEXT: ImageTextModel,
}


def last_token(hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, C): each row's state at its last real token (right padding), the only position that has
    read the whole text under causal attention."""
    B, T, _ = hidden.shape
    if attention_mask is None:
        last = torch.full((B,), T - 1, device=hidden.device)
    else:
        last = (attention_mask.long().sum(-1) - 1).clamp(min=0)
    return hidden[torch.arange(B, device=hidden.device), last]


def mean_over_tokens(hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, C): the mean of each row's real-token states (Sentence-T5's encoder mean pooling)."""
    if attention_mask is None:
        return hidden.mean(1)
    m = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
