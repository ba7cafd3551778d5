"""The Triton FlashAttention kernel (`kernels.attention`) against a float64 reference.

On CPU the kernels run under TRITON_INTERPRET=1 (set by tests/conftest.py), in fp32 and fp16;
the `gpu` tests repeat the important cases in bf16 at long sequence lengths on CUDA. Both the
kernel and `reference_attention` in the input dtype are compared with `reference_attention` in
float64, output and gradients, by normwise relative error ||a − b|| / ||b||.
"""

import pytest
import torch

from kernels.attention import attention, reference_attention, relative_position_bucket

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a − b|| / ||b||, with ||b|| floored at an rms of 1e-2 (gradients here have rms ~0.1–1).

    Some exact gradients are all zeros (one visible key per query gives dq = dk = 0) and the
    kernel's are then rounding noise of ~1e-7, which a plain relative error would call infinite.
    """
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-2 * b.numel() ** 0.5)).item()


def make_inputs(B, H, Hkv, Sq, Sk, D, dtype, device=DEVICE, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Sq, D, generator=g)
    k = torch.randn(B, Hkv, Sk, D, generator=g)
    v = torch.randn(B, Hkv, Sk, D, generator=g)
    dout = torch.randn(B, H, Sq, D, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (q, k, v, dout)]


def forward_backward(fn, q, k, v, dout, t5_bias=None, **kw):
    """Output and gradients (q, k, v[, t5_bias]) of fn on fresh leaf copies of the inputs."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    if t5_bias is not None:
        leaves.append(t5_bias.detach().clone().requires_grad_())
        kw["t5_bias"] = leaves[-1]
    out = fn(*leaves[:3], **kw)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return out, grads


def check(B=1, H=2, Hkv=None, Sq=17, Sk=None, D=32, dtype=torch.float32, t5=None, mask=None, seed=0, **kw):
    """Kernel and dtype reference vs the float64 reference; `t5` = number of buckets, `mask` a callable."""
    Hkv, Sk = Hkv or H, Sk or Sq
    q, k, v, dout = make_inputs(B, H, Hkv, Sq, Sk, D, dtype, seed=seed)
    if mask is not None:
        kw["key_padding_mask"] = mask(B, Sk).to(DEVICE)
    if callable(kw.get("segment_ids")):
        kw["segment_ids"] = kw["segment_ids"](B, Sk).to(DEVICE)
    if "alibi_slopes" in kw:
        kw["alibi_slopes"] = kw["alibi_slopes"].to(DEVICE)
    t5_bias = None
    if t5 is not None:
        t5_bias = torch.randn(H, t5, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE)
        kw["t5_num_buckets"] = t5
    out, grads = forward_backward(attention, q, k, v, dout, t5_bias, **kw)
    ref_out, ref_grads = forward_backward(reference_attention, q, k, v, dout, t5_bias, **kw)
    t64 = None if t5_bias is None else t5_bias.double()
    out64, grads64 = forward_backward(reference_attention, q.double(), k.double(), v.double(), dout.double(), t64, **kw)
    assert out.dtype == dtype and out.shape == (B, H, Sq, D)
    tol_out, tol_grad = TOL[dtype]
    names = ["dq", "dk", "dv", "dt5_bias"]
    for label, o, gs in (("kernel", out, grads), ("reference", ref_out, ref_grads)):
        assert torch.isfinite(o).all() and all(torch.isfinite(g).all() for g in gs), label
        assert rel_err(o, out64) <= tol_out, f"{label} output: {rel_err(o, out64):.2e}"
        for name, g, g64 in zip(names, gs, grads64):
            assert g.dtype == (dtype if name != "dt5_bias" else t5_bias.dtype)
            assert rel_err(g, g64) <= tol_grad, f"{label} {name}: {rel_err(g, g64):.2e}"
    return out, grads


def padding(lengths):
    """Key padding mask of given lengths per batch element (0 = a fully padded element)."""
    return lambda B, Sk: torch.arange(Sk)[None, :] < torch.tensor(lengths)[:, None]


def random_padding(B, Sk):
    m = torch.rand(B, Sk, generator=torch.Generator().manual_seed(7)) > 0.3
    m[-1] = False  # the last batch element attends to nothing at all
    return m


SHAPES = [  # (H, Hkv, Sq, Sk, D, causal)
    (2, 2, 1, 1, 32, False),
    (2, 2, 17, 17, 24, True),
    (2, 2, 65, 65, 80, False),
    (2, 2, 129, 129, 32, True),
    (2, 2, 17, 65, 32, True),  # Sq < Sk: bottom-right causal, as with a KV cache
    (2, 2, 65, 17, 32, True),  # Sq > Sk: the first 48 queries see no key
    (2, 2, 17, 65, 24, False),
    (2, 2, 65, 17, 80, False),
    (4, 2, 65, 65, 32, True),  # grouped-query attention
    (4, 1, 17, 33, 32, False),  # multi-query attention
    (2, 1, 1, 65, 32, True),  # one decoding step against a cache
]


@pytest.mark.parametrize("H,Hkv,Sq,Sk,D,causal", SHAPES)
def test_shapes_fp32(H, Hkv, Sq, Sk, D, causal):
    check(H=H, Hkv=Hkv, Sq=Sq, Sk=Sk, D=D, causal=causal)


@pytest.mark.parametrize("H,Hkv,Sq,Sk,D,causal", [SHAPES[3], SHAPES[4], SHAPES[7], SHAPES[8]])
def test_shapes_fp16(H, Hkv, Sq, Sk, D, causal):
    check(H=H, Hkv=Hkv, Sq=Sq, Sk=Sk, D=D, causal=causal, dtype=torch.float16)


def test_scale_override():
    check(Sq=33, Sk=40, D=32, scale=0.3)


def test_non_contiguous_inputs():
    """(B, S, H, D) projections viewed as (B, H, S, D), as the attention block produces them."""
    B, H, S, D = 2, 2, 33, 32
    q, k, v, dout = make_inputs(B, S, S, H, H, D, torch.float32)  # (B, S, H, D) storage
    q, k, v, dout = (t.transpose(1, 2) for t in (q, k, v, dout))
    out, grads = forward_backward(attention, q, k, v, dout, causal=True)
    q64, k64, v64, dout64 = (t.double() for t in (q, k, v, dout))
    out64, grads64 = forward_backward(reference_attention, q64, k64, v64, dout64, causal=True)
    assert rel_err(out, out64) <= 1e-5
    assert all(rel_err(g, g64) <= 1e-4 for g, g64 in zip(grads, grads64))


@pytest.mark.parametrize("case", [
    dict(B=2, Sq=65, mask=random_padding),
    dict(B=2, Sq=65, Sk=33, causal=True, mask=padding([20, 33])),  # rows that see no key
    dict(B=3, H=4, Hkv=2, Sq=17, Sk=65, mask=padding([65, 0, 9]), dtype=torch.float16),
], ids=["random", "causal-longer-queries", "gqa-fp16"])
def test_key_padding(case):
    check(**case)


@pytest.mark.parametrize("case", [
    dict(Sq=65, causal=True, window=8),
    dict(Sq=33, Sk=65, window=5),
    dict(Sq=65, Sk=40, window=3, causal=True, H=4, Hkv=2, B=2, mask=padding([40, 30])),
    dict(Sq=65, window=0),
    dict(Sq=65, window=16, dtype=torch.float16),
], ids=["causal", "bidirectional", "gqa-padded", "zero", "fp16"])
def test_window(case):
    check(**case)


def documents(*lengths):
    """Segment ids of documents packed back to back, each batch row a list of lengths (last fills Sk)."""
    def build(B, Sk):
        rows = []
        for b in range(B):
            ids = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths[b % len(lengths)])])
            rows.append(torch.cat([ids, torch.full((Sk - len(ids),), len(lengths[b % len(lengths)]))])[:Sk])
        return torch.stack(rows)
    return build


@pytest.mark.parametrize("case", [
    dict(B=2, Sq=65, causal=True, segment_ids=documents([17, 30], [1, 40, 3])),  # packed instruction blocks
    dict(Sq=129, causal=True, segment_ids=documents([5, 60, 33, 20]), H=4, Hkv=2),  # boundaries mid-block, GQA
    dict(Sq=17, Sk=65, causal=True, segment_ids=documents([50])),  # queries against a longer prefix
    dict(B=2, Sq=65, D=80, segment_ids=documents([20, 20], [64])),  # bidirectional document masking
    dict(B=2, Sq=65, Sk=40, segment_ids=lambda B, Sk: torch.randint(0, 3, (B, Sk), generator=torch.Generator().manual_seed(3)),
         causal=True, window=9, mask=padding([40, 31]), Sq_le=True),  # interleaved ids with every other mask
    dict(B=2, Sq=65, causal=True, segment_ids=documents([17, 30], [1, 40, 3]), dtype=torch.float16),
    dict(Sq=1, Sk=65, causal=True, segment_ids=documents([30, 35]), H=2, Hkv=1),  # a decoding step
], ids=["packed", "gqa-129", "prefix", "bidirectional", "random-ids-all-masks", "fp16", "decode"])
def test_document_masking(case):
    case = dict(case)
    if case.pop("Sq_le", False):
        case["Sq"] = case["Sk"]  # segment ids need Sq <= Sk
    check(**case)


def test_document_masking_equals_separate_documents():
    """Two documents packed in one row give each document's output and gradients computed alone."""
    H, D, n1, n2 = 2, 32, 23, 42
    q, k, v, dout = make_inputs(1, H, H, n1 + n2, n1 + n2, D, torch.float32)
    seg = torch.tensor([[0] * n1 + [1] * n2], device=DEVICE)
    out, grads = forward_backward(attention, q, k, v, dout, causal=True, segment_ids=seg)
    for sl in (slice(0, n1), slice(n1, n1 + n2)):
        alone, alone_grads = forward_backward(attention, q[:, :, sl], k[:, :, sl], v[:, :, sl], dout[:, :, sl],
                                              causal=True)
        assert rel_err(out[:, :, sl], alone) <= 1e-5
        assert all(rel_err(g[:, :, sl], a) <= 1e-4 for g, a in zip(grads, alone_grads))


@pytest.mark.parametrize("case", [
    dict(Sq=65, causal=True),
    dict(Sq=17, Sk=65, D=24),
    dict(Sq=65, causal=True, window=20, dtype=torch.float16),
], ids=["causal", "bidirectional", "window-fp16"])
def test_alibi(case):
    H = 4
    slopes = torch.tensor([2 ** (-8 * (h + 1) / H) for h in range(H)])
    check(H=H, alibi_slopes=slopes, **case)


@pytest.mark.parametrize("case", [
    dict(Sq=65, Sk=129, t5=32, t5_max_distance=20),  # log buckets and saturation beyond max_distance
    dict(Sq=65, t5=16, t5_max_distance=12, t5_bidirectional=False, causal=True),
    dict(Sq=17, Sk=65, t5=32, t5_max_distance=128, H=4, Hkv=2),  # the T5 defaults
    dict(B=2, Sq=65, Sk=40, t5=32, t5_max_distance=16, window=24, mask=padding([40, 0])),
    dict(Sq=65, t5=32, t5_max_distance=20, dtype=torch.float16),
], ids=["bidirectional", "causal", "defaults-gqa", "masked", "fp16"])
def test_t5_bias(case):
    check(scale=1.0, **case)


def test_relative_position_bucket_matches_hugging_face():
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-3000, 3001)
    for bidirectional, nb, md in [(True, 32, 128), (False, 32, 128), (True, 16, 20), (False, 64, 256)]:
        expected = t5.T5Attention._relative_position_bucket(rel, bidirectional, nb, md)
        assert torch.equal(relative_position_bucket(rel, bidirectional, nb, md), expected)


def test_backward_is_deterministic():
    kw = dict(causal=True, scale=1.0, t5_num_buckets=32, t5_max_distance=20)
    q, k, v, dout = make_inputs(2, 4, 2, 65, 65, 32, torch.float32)
    t5_bias = torch.randn(4, 32).to(DEVICE)
    out1, grads1 = forward_backward(attention, q, k, v, dout, t5_bias, **kw)
    out2, grads2 = forward_backward(attention, q, k, v, dout, t5_bias, **kw)
    assert torch.equal(out1, out2)
    assert len(grads1) == 4 and all(torch.equal(a, b) for a, b in zip(grads1, grads2))


def test_rows_without_keys_are_zero():
    B, H, Sq, Sk, D = 2, 2, 40, 24, 32
    q, k, v, dout = make_inputs(B, H, H, Sq, Sk, D, torch.float32)
    mask = torch.ones(B, Sk, dtype=torch.bool)
    mask[1] = False
    out, (dq, dk, dv) = forward_backward(attention, q, k, v, dout, causal=True, key_padding_mask=mask.to(DEVICE))
    assert all(torch.isfinite(t).all() for t in (out, dq, dk, dv))
    dead = Sq - Sk  # causal with Sq > Sk: queries 0..15 sit before the first key
    for t in (out, dq):
        assert torch.equal(t[1], torch.zeros_like(t[1]))
        assert torch.equal(t[0, :, :dead], torch.zeros_like(t[0, :, :dead]))
        assert t[0, :, dead:].abs().sum() > 0
    assert torch.equal(dk[1], torch.zeros_like(dk[1])) and torch.equal(dv[1], torch.zeros_like(dv[1]))


def test_bad_shapes_are_reported():
    q, k, v, _ = make_inputs(1, 3, 2, 5, 5, 16, torch.float32)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        attention(q, k, v)
    q, k, v, _ = make_inputs(1, 2, 2, 5, 5, 16, torch.float32)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(q, k, v, key_padding_mask=torch.ones(1, 4, dtype=torch.bool, device=DEVICE))
    table = torch.zeros(2, 32, device=DEVICE)
    with pytest.raises(ValueError, match="t5_max_distance"):  # HF's formula would divide by log(1) = 0
        attention(q, k, v, t5_bias=table, t5_num_buckets=32, t5_max_distance=8)
    with pytest.raises(ValueError, match="buckets"):
        attention(q, k, v, t5_bias=table, t5_num_buckets=16)
    with pytest.raises(ValueError, match="segment_ids must be"):
        attention(q, k, v, segment_ids=torch.zeros(1, 4, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="Sq <= Sk"):
        attention(q, k[:, :, :3], v[:, :, :3], segment_ids=torch.zeros(1, 3, dtype=torch.long, device=DEVICE))


def test_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, _ = make_inputs(1, 2, 2, 8, 8, 16, torch.float32, device="cpu")
    with pytest.raises(RuntimeError, match="Triton kernels need a CUDA device, or TRITON_INTERPRET=1"):
        attention(q, k, v)


# --- CUDA only: bf16 at realistic lengths (the interpreter has no bf16) ----------------------

GPU_CASES = [
    dict(B=2, H=4, Sq=2048, D=64, causal=True),
    dict(B=1, H=4, Sq=2048, D=128, causal=True),
    dict(B=1, H=4, Sq=2048, D=64, t5=32, t5_max_distance=128, scale=1.0, causal=True, t5_bidirectional=False),
    dict(B=1, H=4, Sq=2048, D=64, t5=32, t5_max_distance=128, scale=1.0),
    dict(B=2, H=8, Hkv=2, Sq=1024, D=80, causal=True, window=256, mask=padding([1024, 700])),
    dict(B=2, H=4, Sq=1, Sk=2048, D=128, causal=True),
    dict(B=1, H=4, Sq=1000, Sk=1500, D=96, alibi_slopes=torch.tensor([0.5, 0.25, 0.125, 0.0625])),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items() if k != "mask"))
def test_gpu_bf16(case):
    check(dtype=torch.bfloat16, **case)


@pytest.mark.gpu
def test_gpu_backward_is_deterministic():
    kw = dict(causal=True, scale=1.0, t5_num_buckets=32, t5_max_distance=128)
    q, k, v, dout = make_inputs(2, 8, 2, 2048, 2048, 64, torch.bfloat16)
    t5_bias = torch.randn(8, 32, device=DEVICE)
    _, grads1 = forward_backward(attention, q, k, v, dout, t5_bias, **kw)
    _, grads2 = forward_backward(attention, q, k, v, dout, t5_bias, **kw)
    assert all(torch.equal(a, b) for a, b in zip(grads1, grads2))
