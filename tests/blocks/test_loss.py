"""The fused linear + cross-entropy equals `F.cross_entropy` on materialised logits: loss and gradients."""

import pytest
import torch
import torch.nn.functional as F

from zoo.blocks.loss import linear_cross_entropy
from zoo.models import GPT, GPTConfig


def close(actual, expected, rel=1e-5):
    """Equal to `rel` of the reference's largest magnitude (elementwise, so no error can hide in a norm)."""
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * expected.abs().max().item())


def inputs(n=45, c=24, v=1001, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, c, generator=g) * scale).requires_grad_()
    weight = torch.randn(v, c, generator=g).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, labels


def reference(hidden, weight, labels, grad_scale=1.0):
    loss = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100)
    hg, wg = torch.autograd.grad(loss * grad_scale, (hidden, weight))
    return loss, hg, wg


# chunks of 1 row, a chunk that divides neither N=45 nor V=1001, exactly N, more than N, and one chunk
@pytest.mark.parametrize("chunk", [1, 7, 45, 64, None])
def test_loss_and_gradients_equal_unfused(chunk):
    hidden, weight, labels = inputs()
    labels[[0, 3, 4, 44]] = -100  # ignored positions, first and last row included
    labels[14:21] = -100  # with chunk 7: one chunk entirely ignored
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=chunk)
    hg, wg = torch.autograd.grad(loss, (hidden, weight))
    ref_loss, ref_hg, ref_wg = reference(hidden, weight, labels)
    close(loss, ref_loss)
    close(hg, ref_hg)
    close(wg, ref_wg)
    assert hg[[0, 3, 4, 44, 17]].abs().max() == 0  # ignored rows get no gradient


def test_batched_shapes_and_upstream_gradient():
    """(B, T, C) hidden with (B, T) labels, and a loss scaled before backward (grad_output ≠ 1)."""
    hidden, weight, labels = inputs(n=2 * 13)
    hidden3, labels2 = hidden.view(2, 13, -1), labels.view(2, 13)
    loss = linear_cross_entropy(hidden3, weight, labels2, chunk_size=5)
    hg, wg = torch.autograd.grad(loss * 3.5, (hidden, weight))
    ref_loss, ref_hg, ref_wg = reference(hidden, weight, labels, grad_scale=3.5)
    close(loss, ref_loss)
    close(hg, ref_hg)
    close(wg, ref_wg)


def test_extreme_logits_stay_finite_and_exact():
    """Logits in the thousands: the right token's softmax underflows to 0 in fp32, yet the loss is exact."""
    hidden, weight, labels = inputs(scale=300.0, seed=1)
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=8)
    ref_loss, ref_hg, ref_wg = reference(hidden, weight, labels)
    assert ref_loss.item() > 1000 and torch.isfinite(loss)
    close(loss, ref_loss)
    hg, wg = torch.autograd.grad(loss, (hidden, weight))
    close(hg, ref_hg)
    close(wg, ref_wg)


def test_no_grad_and_frozen_weight():
    hidden, weight, labels = inputs()
    ref_loss = F.cross_entropy(hidden @ weight.t(), labels)
    with torch.no_grad():
        close(linear_cross_entropy(hidden, weight, labels, chunk_size=10), ref_loss.detach())
    frozen = weight.detach()
    loss = linear_cross_entropy(hidden, frozen, labels, chunk_size=10)
    loss.backward()
    close(hidden.grad, torch.autograd.grad(F.cross_entropy(hidden @ frozen.t(), labels), hidden)[0])
    with pytest.raises(ValueError, match="disagree"):
        linear_cross_entropy(hidden, weight, labels[:-1])


def test_every_token_ignored_gives_nan_loss_and_zero_gradients_like_torch():
    hidden, weight, labels = inputs(n=6)
    labels[:] = -100
    loss = linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    ref_loss, ref_hg, ref_wg = reference(hidden, weight, labels)
    assert torch.isnan(loss) and torch.isnan(ref_loss)
    hg, wg = torch.autograd.grad(loss, (hidden, weight))
    assert torch.equal(hg, ref_hg) and torch.equal(wg, ref_wg) and not wg.any()


def test_gpt_labels_path_equals_logits_path():
    """`GPT(x, labels=y)` trains exactly like cross-entropy on its logits: same loss, same gradient of
    every parameter (the tied embedding/head weight included)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=301, max_seq_len=32, d_model=32, n_layer=2, n_head=4))
    model.loss_chunk_size = 9  # several chunks, the last one partial
    x = torch.randint(0, 301, (3, 20))
    y = F.pad(x[:, 1:], (0, 1), value=-100)
    fused = model(x, labels=y)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    logits = model(x)
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    close(fused, ref)
    for (name, _), g, r in zip(model.named_parameters(), fused_grads, ref_grads):
        if "k_proj.bias" in name:  # softmax ignores a key bias: its true gradient is 0, both sides are rounding
            assert g.abs().max() < 1e-6 and r.abs().max() < 1e-6
            continue
        close(g, r)


def test_bf16_autocast_follows_the_unfused_head():
    """Under autocast the head runs in the autocast dtype, as `hidden @ weight.T` would; gradients come
    back in the parameters' dtype, with the weight gradient summed over chunks in fp32."""
    hidden, weight, labels = inputs(n=40, v=500)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, labels, chunk_size=6)
        ref = F.cross_entropy((hidden @ weight.t()).float(), labels)
    hg, wg = torch.autograd.grad(loss, (hidden, weight))
    ref_hg, ref_wg = torch.autograd.grad(ref, (hidden, weight))
    assert hg.dtype == wg.dtype == torch.float32
    close(loss, ref, rel=1e-2)
    close(hg, ref_hg, rel=3e-2)
    close(wg, ref_wg, rel=3e-2)
