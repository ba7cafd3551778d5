"""CLIP: contrastive language-image pre-training (Radford et al., 2021, "Learning Transferable
Visual Models From Natural Language Supervision").

Two towers map images and captions into one embedding space:

- the vision tower is a ViT (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words"): a strided
  convolution cuts the image into patches, a learned class token is prepended, learned positions
  are added, a LayerNorm (`pre_norm`, HF's `pre_layrnorm`) precedes the pre-norm encoder, and the
  class token's final state is normalised again (`post_norm`);
- the text tower is a causal pre-norm transformer with learned positions and a final norm, read
  out at the end-of-text token;
- bias-free linear projections map both into the shared space, where embeddings are
  L2-normalised and compared by cosine similarity times exp(`logit_scale`), a learned inverse
  temperature that starts at 1/0.07.

The training objective (symmetric InfoNCE) lives in `zoo.tasks.Contrastive`; this file is the
pure network, built from `zoo.blocks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks import (
    AttentionConfig, AttnImpl, BlockConfig, DecoderStack, EncoderStack, LearnedPositions, MLPConfig, NormConfig,
    NormImpl, PatchEmbedding, StackConfig, build_norm,
)
from zoo.blocks.config import Activation
from zoo.models.base import FeatureModel, ImageTextModel, ZooModel, normal_init

TextPooling = Literal["eos", "argmax", "last"]


@dataclass
class CLIPVisionConfig:
    """The ViT image tower.

    Args:
        image_size: side of the square input image, in pixels.
        patch_size: side of a patch; image_size must be a multiple of it.
        channels: input channels (3 for RGB).
        d_model: width. n_layer: blocks. n_head: attention heads. d_ff: MLP width (None = 4·d_model).
        activation: MLP activation ("quick_gelu" for OpenAI's CLIP, "gelu" for most OpenCLIP models).
        norm_eps: LayerNorm epsilon.
    """

    image_size: int = 224
    patch_size: int = 32
    channels: int = 3
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    d_ff: Optional[int] = None
    activation: Activation = "quick_gelu"
    norm_eps: float = 1e-5

    def __post_init__(self):
        from zoo.models.validation import check_model_config

        check_model_config(self, positive=("image_size", "patch_size", "channels", "d_model", "n_layer", "n_head",
                                           "d_ff"), divides=(("n_head", "d_model"), ("patch_size", "image_size")))


@dataclass
class CLIPTextConfig:
    """The causal text tower (its vocabulary size is `CLIPConfig.vocab_size`).

    Args:
        max_seq_len: longest caption in tokens (77 for CLIP).
        d_model: width. n_layer: blocks. n_head: attention heads. d_ff: MLP width (None = 4·d_model).
        activation: MLP activation. norm_eps: LayerNorm epsilon.
        pooling: which position represents the caption: "eos" = the first `eos_token_id`,
            "argmax" = the largest token id (OpenAI's original rule, where end-of-text is the
            last id; Hugging Face keeps it for configs with eos_token_id == 2), "last" = the
            last non-padding token.
        eos_token_id: the end-of-text id used by "eos" pooling; must match the tokenizer.
    """

    max_seq_len: int = 77
    d_model: int = 512
    n_layer: int = 12
    n_head: int = 8
    d_ff: Optional[int] = None
    activation: Activation = "quick_gelu"
    norm_eps: float = 1e-5
    pooling: TextPooling = "eos"
    eos_token_id: int = 49407

    def __post_init__(self):
        from zoo.models.validation import check_model_config

        check_model_config(self, positive=("max_seq_len", "d_model", "n_layer", "n_head", "d_ff"),
                           divides=(("n_head", "d_model"),))


@dataclass
class CLIPConfig:
    """Every field is a YAML key under the model's `config:`; `vision:` and `text:` nest.

    Args:
        vocab_size: text vocabulary (linked from the data module by the CLI).
        vision: the image tower (`CLIPVisionConfig`). text: the text tower (`CLIPTextConfig`).
        projection_dim: width of the shared embedding space.
        logit_scale_init: initial log inverse temperature, ln(1/0.07).
        dropout: residual/MLP dropout in both towers. attn_dropout: dropout on attention weights.
        attn_impl: attention backend, "eager" | "torch" | "triton".
        norm_impl: norm backend, "torch" | "triton".
        init_std: std of the normal initialisation of linear, embedding and patch weights.
    """

    vocab_size: int = 49408
    vision: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    text: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    projection_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)
    dropout: float = 0.0
    attn_dropout: float = 0.0
    attn_impl: AttnImpl = "torch"
    norm_impl: NormImpl = "torch"
    init_std: float = 0.02

    def __post_init__(self):
        # Checkpoints store asdict(config): the towers come back as dicts.
        if isinstance(self.vision, dict):
            self.vision = CLIPVisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = CLIPTextConfig(**self.text)
        from zoo.models.validation import check_model_config

        check_model_config(self, positive=("vocab_size", "projection_dim"))


@dataclass
class CLIPOutput:
    """What `CLIP.forward` returns; embeddings are L2-normalised."""

    image_embeds: torch.Tensor  # (B_img, P)
    text_embeds: torch.Tensor  # (B_txt, P)
    logits_per_image: torch.Tensor  # (B_img, B_txt) = scale · image_embeds @ text_embedsᵀ
    logits_per_text: torch.Tensor  # (B_txt, B_img)
    logit_scale: torch.Tensor  # () exp(logit_scale), the inverse temperature actually applied


def tower_stack(tower: CLIPVisionConfig | CLIPTextConfig, c: CLIPConfig, final_norm: bool) -> StackConfig:
    """A tower's stack: pre-norm LayerNorm blocks with biased projections (causal for the text tower,
    which `DecoderStack` makes so)."""
    attention = AttentionConfig(tower.n_head, dropout=c.attn_dropout, impl=c.attn_impl)
    mlp = MLPConfig(tower.d_ff or 4 * tower.d_model, tower.activation, dropout=c.dropout)
    norm = NormConfig("layernorm", tower.norm_eps, True, c.norm_impl)
    block = BlockConfig(tower.d_model, attention, mlp, norm, prenorm=True, dropout=c.dropout)
    return StackConfig(tower.n_layer, block, final_norm=final_norm)


class VisionTower(nn.Module):
    """ViT: (B, 3, H, W) → pooled class-token state (B, d_model)."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        v = c.vision
        self.image_size = v.image_size
        self.patch_embed = PatchEmbedding(v.image_size, v.patch_size, v.d_model, v.channels, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(v.d_model) * v.d_model**-0.5)
        self.positions = LearnedPositions(self.patch_embed.num_patches + 1, v.d_model)
        self.pre_norm = build_norm("layernorm", v.d_model, v.norm_eps, impl=c.norm_impl)
        self.encoder = EncoderStack(tower_stack(v, c, final_norm=False))
        self.post_norm = build_norm("layernorm", v.d_model, v.norm_eps, impl=c.norm_impl)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        B, _, H, W = pixel_values.shape
        if H != self.image_size or W != self.image_size:
            raise ValueError(f"images are {H}x{W} but the model takes {self.image_size}x{self.image_size}")
        x = self.patch_embed(pixel_values.to(self.class_embedding.dtype))  # (B, N, C)
        cls = self.class_embedding.expand(B, 1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + N, C)
        x = x + self.positions(torch.arange(x.shape[1], device=x.device)[None])
        x = self.encoder(self.pre_norm(x))
        return self.post_norm(x[:, 0])  # (B, C)


class TextTower(nn.Module):
    """Causal transformer: (B, T) token ids → the pooled end-of-text state (B, d_model)."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        t = c.text
        self.pooling, self.eos_token_id, self.max_seq_len = t.pooling, t.eos_token_id, t.max_seq_len
        self.embed_tokens = nn.Embedding(c.vocab_size, t.d_model)
        self.positions = LearnedPositions(t.max_seq_len, t.d_model)
        self.transformer = DecoderStack(tower_stack(t, c, final_norm=True))  # causal: HF's text_model.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T = input_ids.shape
        if T > self.max_seq_len:
            raise ValueError(f"captions of {T} tokens exceed text.max_seq_len={self.max_seq_len}")
        x = self.embed_tokens(input_ids) + self.positions(torch.arange(T, device=input_ids.device)[None])
        mask = attention_mask.bool() if attention_mask is not None else None
        x = self.transformer(x, key_padding_mask=mask)  # (B, T, C), final norm applied
        return x[torch.arange(B, device=x.device), self.pool_index(input_ids, attention_mask)]

    def pool_index(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(B,) position read out per caption, by the configured rule (see `CLIPTextConfig`)."""
        if self.pooling == "argmax":
            return input_ids.argmax(dim=-1)
        if self.pooling == "eos":  # the first end-of-text: padding may reuse the same id
            return (input_ids == self.eos_token_id).int().argmax(dim=-1)
        if attention_mask is None:
            return torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1)
        return attention_mask.long().cumsum(-1).argmax(dim=-1)  # first position reaching the count


class CLIP(ZooModel, ImageTextModel, FeatureModel):
    """Image and text towers with projections into one normalised embedding space.

    `forward(pixel_values, input_ids, attention_mask=None)` → `CLIPOutput` with `image_embeds`,
    `text_embeds`, `logits_per_image`, `logits_per_text` and the applied `logit_scale`.

    Args:
        config: the architecture (see `CLIPConfig`).
    """

    family = "clip"

    def __init__(self, config: Optional[CLIPConfig] = None):
        super().__init__()
        self.config = c = config or CLIPConfig()
        self.vision_model = VisionTower(c)
        self.text_model = TextTower(c)
        self.visual_projection = nn.Linear(c.vision.d_model, c.projection_dim, bias=False)
        self.text_projection = nn.Linear(c.text.d_model, c.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self.apply(lambda m: normal_init(m, c.init_std))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → L2-normalised image embeddings (B, projection_dim)."""
        return F.normalize(self.visual_projection(self.vision_model(pixel_values)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T) ids (+ mask, 1 = real token) → L2-normalised text embeddings (B, projection_dim)."""
        return F.normalize(self.text_projection(self.text_model(input_ids, attention_mask)), dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,  # (B_img, C, H, W)
        input_ids: torch.Tensor,  # (B_txt, T)
        attention_mask: Optional[torch.Tensor] = None,  # (B_txt, T), 1 = real token
    ) -> CLIPOutput:
        image_embeds = self.encode_image(pixel_values)
        text_embeds = self.encode_text(input_ids, attention_mask)
        scale = self.logit_scale.exp().reshape(())  # () also where FSDP2 keeps the parameter as (1,)
        logits_per_image = scale * image_embeds @ text_embeds.t()  # (B_img, B_txt)
        return CLIPOutput(image_embeds, text_embeds, logits_per_image, logits_per_image.t(), scale)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """`logit_scale` loads from () or (1,), whichever this model holds: checkpoints written under
        FSDP2 carry it as (1,) (`zoo.parallel.scalars_as_vectors`)."""
        key = prefix + "logit_scale"
        if key in state_dict and state_dict[key].numel() == 1:
            state_dict[key] = state_dict[key].reshape(self.logit_scale.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def feature_dim(self) -> int:
        return self.config.projection_dim

    def features(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, P): the normalised text embeddings (what a caption is compared by)."""
        return self.encode_text(input_ids, attention_mask)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count; everything by default (CLIP's towers are compared whole)."""
        return super().num_parameters(non_embedding)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.text_model.embed_tokens.weight, self.text_model.positions.weight, self.vision_model.positions.weight]
