"""The shared block library: every family is configuration over these parts."""

from zoo.blocks.attention import (
    Attention, KVCache, ScaledDotProduct, ScoreBias, attend, set_attention_impl, visibility_mask,
)
from zoo.blocks.backend import AttnImpl, NormImpl
from zoo.blocks.config import AttentionConfig, BlockConfig, MLPConfig, NormConfig, StackConfig
from zoo.blocks.mlp import ACTIVATIONS, MLP, Activation
from zoo.blocks.norms import LayerNorm, NormKind, RMSNorm, build_norm, set_norm_impl
from zoo.blocks.patch import PatchEmbedding
from zoo.blocks.positions import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    T5RelativeBias,
    alibi_slopes,
    apply_rotary,
    relative_position_bucket,
)
from zoo.blocks.transformer import DecoderStack, EncoderStack, TransformerBlock, TransformerStack

__all__ = [
    "ACTIVATIONS", "Activation", "Attention", "AttentionConfig", "AttnImpl", "BlockConfig", "MLPConfig", "NormConfig",
    "ScaledDotProduct", "StackConfig", "set_attention_impl", "set_norm_impl", "DecoderStack", "EncoderStack", "KVCache",
    "LayerNorm", "LearnedPositions", "MLP", "NormImpl", "NormKind", "PatchEmbedding", "RMSNorm",
    "RotaryEmbedding", "ScoreBias", "SinusoidalPositions", "T5RelativeBias", "TransformerBlock",
    "TransformerStack", "alibi_slopes", "apply_rotary", "attend", "build_norm", "relative_position_bucket",
    "visibility_mask",
]
