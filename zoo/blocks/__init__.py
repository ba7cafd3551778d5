"""The shared block library: every family is configuration over these parts."""

from zoo.blocks.attention import Attention, KVCache, ScoreBias, attend, visibility_mask
from zoo.blocks.backend import AttnImpl, NormImpl
from zoo.blocks.mlp import ACTIVATIONS, MLP, Activation
from zoo.blocks.norms import LayerNorm, NormKind, RMSNorm, build_norm
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
    "ACTIVATIONS", "Activation", "Attention", "AttnImpl", "DecoderStack", "EncoderStack", "KVCache",
    "LayerNorm", "LearnedPositions", "MLP", "NormImpl", "NormKind", "PatchEmbedding", "RMSNorm",
    "RotaryEmbedding", "ScoreBias", "SinusoidalPositions", "T5RelativeBias", "TransformerBlock",
    "TransformerStack", "alibi_slopes", "apply_rotary", "attend", "build_norm", "relative_position_bucket",
    "visibility_mask",
]
