"""All attention backends compute the same function, and it is the textbook one."""

import math

import pytest
import torch

from zoo.blocks import Attention, KVCache, ScoreBias, alibi_slopes, attend
from zoo.blocks.positions import T5RelativeBias

IMPLS = ["eager", "torch", "triton"]


@pytest.fixture(autouse=True)
def kernel_calls(request, monkeypatch):
    """For impl="triton", prove the Triton kernel ran (no silent fallback to torch)."""
    impl = request.node.callspec.params.get("impl") if hasattr(request.node, "callspec") else None
    if impl != "triton":
        yield None
        return
    import kernels

    calls = []
    real = kernels.attention
    monkeypatch.setattr(kernels, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    yield calls
    assert calls, "impl='triton' fell back to torch instead of running kernels.attention"


def naive(q, k, v, causal=False, window=None, pad=None, scale=None, bias=None):
    """softmax(scale·QKᵀ + bias)V in float64, one query at a time — independent of zoo's code."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, H, Sq, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            kh, vh = k[b, h // (H // Hkv)], v[b, h // (H // Hkv)]
            for i in range(Sq):
                pos = i + Sk - Sq
                keep = [j for j in range(Sk) if (not causal or j <= pos) and (window is None or abs(pos - j) <= window)
                        and (pad is None or bool(pad[b, j]))]
                if not keep:
                    continue
                s = (kh[keep] @ q[b, h, i]) * scale
                if bias is not None:
                    s = s + bias[h, i, keep].double()
                out[b, h, i] = torch.softmax(s, 0) @ vh[keep]
    return out


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "causal": dict(causal=True),
    "bidirectional": dict(),
    "padded": dict(pad=True),
    "causal-padded": dict(causal=True, pad=True),
    "window": dict(causal=True, window=3),
    "window-bidirectional": dict(window=2),
    "scale": dict(scale=1.0),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sq,sk,hkv", [(9, 9, 4), (5, 11, 2), (1, 7, 1)])
def test_backends_match_textbook(impl, case, sq, sk, hkv):
    kw = dict(CASES[case])
    q, k, v = rand(2, 4, sq, 16, seed=1), rand(2, hkv, sk, 16, seed=2), rand(2, hkv, sk, 16, seed=3)
    pad = None
    if kw.pop("pad", False):
        pad = torch.ones(2, sk, dtype=torch.bool)
        pad[1, : sk // 2] = False  # left padding on the second row
    ref = naive(q, k, v, pad=pad, **kw)
    out = attend(q, k, v, impl=impl, key_padding_mask=pad, **kw)
    assert (out.double() - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_cross_attention_module_matches_textbook(impl):
    """The cross-attention module (queries from x, keys and values from the context, padded context
    keys ignored) equals its own projections around the float64 textbook attention."""
    torch.manual_seed(0)
    attn = Attention(32, 4, cross=True, impl=impl).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 13, 32)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, 9:] = False

    def heads(t):  # (B, T, 32) → (B, 4, T, 8)
        return t.view(2, -1, 4, 8).transpose(1, 2)

    with torch.no_grad():
        ctx_out = naive(heads(attn.q_proj(x)), heads(attn.k_proj(ctx)), heads(attn.v_proj(ctx)), pad=mask)
        ref = attn.o_proj(ctx_out.transpose(1, 2).reshape(2, 5, 32).float())
        assert (attn(x, mask, context=ctx) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_alibi_and_t5_bias_backends_agree(impl):
    q, k, v = rand(1, 4, 6, 16, seed=4), rand(1, 4, 10, 16, seed=5), rand(1, 4, 10, 16, seed=6)
    slopes = alibi_slopes(4)
    pos_q, pos_k = torch.arange(4, 10)[:, None], torch.arange(10)[None]
    alibi = -slopes[:, None, None] * (pos_q - pos_k).abs()
    ref = naive(q, k, v, causal=True, bias=alibi)
    out = attend(q, k, v, impl=impl, causal=True, bias=ScoreBias(alibi_slopes=slopes))
    assert (out.double() - ref).abs().max() <= 1e-5
    rb = T5RelativeBias(4, num_buckets=8, max_distance=16, bidirectional=True)
    torch.nn.init.normal_(rb.relative_attention_bias.weight)
    bias = ScoreBias(t5_table=rb.table().detach(), t5_num_buckets=8, t5_max_distance=16, t5_bidirectional=True)
    ref = naive(q, k, v, bias=rb.matrix(6, 10).detach(), scale=1.0)
    assert (attend(q, k, v, impl=impl, scale=1.0, bias=bias).double() - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_fully_masked_rows_give_zero(impl):
    q, k, v = rand(2, 2, 4, 16), rand(2, 2, 4, 16, seed=1), rand(2, 2, 4, 16, seed=2)
    pad = torch.ones(2, 4, dtype=torch.bool)
    pad[1] = False
    out = attend(q, k, v, impl=impl, key_padding_mask=pad)
    assert torch.isfinite(out).all() and out[1].abs().max() == 0


def test_eager_weights_are_a_distribution():
    q, k, v = rand(1, 2, 5, 8), rand(1, 2, 5, 8, seed=1), rand(1, 2, 5, 8, seed=2)
    out, w = attend(q, k, v, impl="eager", causal=True, return_weights=True)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 5))
    assert (w.triu(1) == 0).all()  # causal: no weight on future keys
    assert torch.allclose(out, w @ v, atol=1e-6)


def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(0)
    attn = Attention(32, 4, n_kv_head=2, causal=True, window=4).eval()
    x = torch.randn(2, 9, 32)
    full = attn(x)
    cache = KVCache()
    steps = [attn(x[:, :5], cache=cache)] + [attn(x[:, t:t + 1], cache=cache) for t in range(5, 9)]
    assert cache.seq_len == 9
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5


def test_gqa_rejects_bad_head_counts():
    with pytest.raises(ValueError, match="multiple"):
        Attention(32, 4, n_kv_head=3)
