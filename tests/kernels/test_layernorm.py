"""LayerNorm / RMSNorm Triton kernels against a float64 reference, forward and backward.

On CPU the kernels run under TRITON_INTERPRET=1 (set by tests/conftest.py); hidden sizes 4099
and 65536 take the looped (row-in-chunks) path there, the others the fused path.
"""

from __future__ import annotations

import pytest
import torch

from kernels.layernorm import layer_norm, reference_layer_norm, reference_rms_norm, rms_norm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# rows {1, 7, 129} x hidden {24, 80, 512}, plus the looped path at 4099 and 65536 with few rows
SHAPES = [(m, n) for m in (1, 7, 129) for n in (24, 80, 512)] + [(1, 4099), (7, 4099), (2, 65536)]


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Normwise relative error of `a` against the float64 `ref`."""
    return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _inputs(m, n, dtype, param_dtype=None, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    param_dtype = param_dtype or dtype
    # a mean offset and a scale make centring and epsilon mistakes visible
    x = (torch.randn(m, n, generator=g) * 3 + 1).to(dtype)
    w = (torch.randn(n, generator=g) * 0.5 + 1).to(param_dtype)
    b = (torch.randn(n, generator=g) * 0.5).to(param_dtype) if bias else None
    dy = torch.randn(m, n, generator=g).to(dtype)
    return [t if t is None else t.to(DEVICE) for t in (x, w, b, dy)]


def _grads(fn, args, dy):
    """Run fn(*args) forward and backward; returns the output and the grads of the tensor args."""
    leaves = [None if a is None else a.detach().clone().requires_grad_() for a in args]
    y = fn(*leaves)
    y.backward(dy)
    return y, [None if a is None else a.grad for a in leaves]


def _check(kind, x, w, b, dy, tol_y, tol_g):
    fn, ref = (rms_norm, reference_rms_norm) if kind == "rms" else (layer_norm, reference_layer_norm)
    args = [x, w] if kind == "rms" else [x, w, b]
    y, grads = _grads(fn, args, dy)
    y_ref, grads_ref = _grads(ref, [None if a is None else a.double() for a in args], dy.double())
    assert y.dtype == x.dtype and y.shape == x.shape
    assert _rel(y, y_ref) <= tol_y
    for name, g, g_ref, a in zip(("dx", "dw", "db"), grads, grads_ref, args):
        if a is None:
            continue
        assert g.dtype == a.dtype, f"{name} dtype {g.dtype}, param {a.dtype}"
        assert _rel(g, g_ref) <= tol_g, f"{name}: {_rel(g, g_ref):.2e}"


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_fp32_matches_float64_reference(kind, m, n):
    x, w, b, dy = _inputs(m, n, torch.float32)
    _check(kind, x, w, b, dy, tol_y=1e-5, tol_g=1e-4)


@pytest.mark.parametrize("m,n", [(7, 24), (129, 80), (7, 4099)])
def test_layer_norm_without_bias(m, n):
    x, w, _, dy = _inputs(m, n, torch.float32, bias=False)
    _check("layer", x, w, None, dy, tol_y=1e-5, tol_g=1e-4)


@pytest.mark.parametrize("m,n", [(7, 80), (129, 512), (7, 4099)])
@pytest.mark.parametrize("param_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_fp16_activations(kind, param_dtype, m, n):
    # fp32 parameters with half activations is the usual mixed-precision setup
    x, w, b, dy = _inputs(m, n, torch.float16, param_dtype=param_dtype)
    _check(kind, x, w, b, dy, tol_y=2e-3, tol_g=2e-3)


def test_any_leading_shape_and_non_contiguous_input():
    x, w, b, _ = _inputs(5 * 3 * 4, 80, torch.float32)
    x = x.view(5, 3, 4, 80).transpose(0, 2)  # (4, 3, 5, 80), not contiguous
    dy = torch.randn_like(x)
    _check("layer", x, w, b, dy, tol_y=1e-5, tol_g=1e-4)



def test_strided_last_dim():
    x, w, _, dy = _inputs(7, 160, torch.float32)
    # slice inside the function so the kernel really sees a last-dim stride of 2
    y, (gx, gw) = _grads(lambda a, ww: rms_norm(a[:, ::2], ww), [x, w[:80]], dy[:, :80])
    y_ref, (rx, rw) = _grads(lambda a, ww: reference_rms_norm(a[:, ::2], ww), [x.double(), w[:80].double()], dy[:, :80].double())
    assert _rel(y, y_ref) <= 1e-5 and _rel(gx, rx) <= 1e-4 and _rel(gw, rw) <= 1e-4


@pytest.mark.parametrize("m,n", [(129, 512), (7, 4099)])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_backward_is_bitwise_deterministic(kind, m, n):
    x, w, b, dy = _inputs(m, n, torch.float32)
    fn = rms_norm if kind == "rms" else layer_norm
    args = [x, w] if kind == "rms" else [x, w, b]
    _, first = _grads(fn, args, dy)
    _, second = _grads(fn, args, dy)
    for g1, g2 in zip(first, second):
        assert torch.equal(g1, g2)


def test_zero_rows():
    x, w, b, _ = _inputs(1, 24, torch.float32)
    x = x[:0].requires_grad_()
    w.requires_grad_()
    y = layer_norm(x, w, b)
    y.sum().backward()
    assert y.shape == (0, 24) and torch.equal(w.grad, torch.zeros_like(w))


def test_bad_weight_shape_is_a_clear_error():
    x, w, _, _ = _inputs(3, 24, torch.float32)
    with pytest.raises(ValueError, match="weight must have shape"):
        rms_norm(x, w[:10])


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w, b = torch.randn(2, 8), torch.ones(8), torch.zeros(8)
    with pytest.raises(RuntimeError, match="need a CUDA device, or TRITON_INTERPRET=1"):
        layer_norm(x, w, b)
    with pytest.raises(RuntimeError, match="need a CUDA device"):
        rms_norm(x, w)


# ---- GPU only: bf16 (the interpreter has none) and the compiled large-row paths -----------------


@pytest.mark.gpu
@pytest.mark.parametrize("m,n", [(1, 24), (129, 4099), (4096, 768), (8, 65536)])
@pytest.mark.parametrize("param_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_bf16_on_gpu(kind, param_dtype, m, n):
    x, w, b, dy = _inputs(m, n, torch.bfloat16, param_dtype=param_dtype)
    _check(kind, x, w, b, dy, tol_y=1e-2, tol_g=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n", [(4099, 1024), (300, 12288), (64, 65536)])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_fp32_large_on_gpu_is_accurate_and_deterministic(kind, m, n):
    x, w, b, dy = _inputs(m, n, torch.float32)
    _check(kind, x, w, b, dy, tol_y=1e-5, tol_g=1e-4)
    fn = rms_norm if kind == "rms" else layer_norm
    args = [x, w] if kind == "rms" else [x, w, b]
    assert all(torch.equal(g1, g2) for g1, g2 in zip(_grads(fn, args, dy)[1], _grads(fn, args, dy)[1]))
