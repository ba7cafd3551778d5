"""Norms, MLPs and position schemes against their defining formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.blocks import (MLP, AttentionConfig, BlockConfig, LayerNorm, MLPConfig, RMSNorm, RotaryEmbedding, SinusoidalPositions, TransformerBlock,
                        alibi_slopes, apply_rotary, relative_position_bucket)
from zoo.blocks.mlp import ACTIVATIONS


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_rmsnorm_formula(impl):
    x = torch.randn(3, 5, 24)
    norm = RMSNorm(24, eps=1e-6, impl=impl)
    torch.nn.init.normal_(norm.weight)
    ref = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert (norm(x) - ref).abs().max() < 1e-5


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_layernorm_formula_and_no_bias(impl):
    x = torch.randn(4, 24) * 3 + 1
    for bias in (True, False):
        norm = LayerNorm(24, eps=1e-5, bias=bias, impl=impl)
        torch.nn.init.normal_(norm.weight)
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        ref = (x - mu) / torch.sqrt(var + 1e-5) * norm.weight + (norm.bias if bias else 0)
        assert (norm(x) - ref).abs().max() < 1e-5


def test_activations():
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(ACTIVATIONS["gelu_tanh"](x), F.gelu(x, approximate="tanh"), atol=1e-6)
    assert torch.allclose(ACTIVATIONS["quick_gelu"](x), x * torch.sigmoid(1.702 * x))
    assert torch.allclose(ACTIVATIONS["gelu"](x), 0.5 * x * (1 + torch.erf(x / math.sqrt(2))), atol=1e-6)


def test_gated_mlp_is_swiglu():
    mlp = MLP(8, 16, activation="silu", gated=True, bias=False)
    x = torch.randn(2, 3, 8)
    ref = mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    assert torch.allclose(mlp(x), ref)
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(8, 16, activation="swish")


def test_sinusoidal_table():
    table = SinusoidalPositions(50, 16).table
    pos, i = 7, 3
    assert math.isclose(table[pos, 2 * i], math.sin(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert math.isclose(table[pos, 2 * i + 1], math.cos(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)


def test_rope_is_relative_and_norm_preserving():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cq, sq = rope(torch.tensor([[i]]))
        ck, sk = rope(torch.tensor([[j]]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    assert torch.isclose(score(5, 2), score(13, 10), atol=1e-5)  # depends on i - j only
    c, s = rope(torch.tensor([[9]]))
    assert torch.isclose(apply_rotary(q, c, s).norm(), q.norm(), atol=1e-5)


def test_alibi_slopes():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # not a power of two (Press et al.'s rule): the 8 slopes of 8 heads, then every other one of 16 heads
    twelve = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    assert torch.allclose(alibi_slopes(12), torch.tensor(twelve))


def test_relative_position_bucket_matches_hugging_face():
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        for nb, md in ((32, 128), (8, 20)):
            ref = t5.T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            assert torch.equal(relative_position_bucket(rel, bidirectional, nb, md), ref)


def test_post_norm_block_normalizes_its_output():
    block = TransformerBlock(BlockConfig(16, AttentionConfig(n_head=2), MLPConfig(d_ff=32), prenorm=False)).eval()
    y = block(torch.randn(2, 5, 16) * 10)
    assert torch.allclose(y.mean(-1), torch.zeros(2, 5), atol=1e-5)  # the last op is a LayerNorm
    pre = TransformerBlock(BlockConfig(16, AttentionConfig(n_head=2), MLPConfig(d_ff=32), prenorm=True)).eval()
    x = torch.randn(2, 5, 16) * 10
    assert pre(x).mean(-1).abs().max() > 1e-3  # pre-norm keeps the residual stream
