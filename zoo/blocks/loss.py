"""Fused linear + cross-entropy: a language-model head and its loss in one chunked pass.

The textbook path, `F.cross_entropy(hidden @ Wᵀ, labels)`, materialises the logits (N, V) and their
log-softmax (N, V), and in backward a zero-filled one-hot gradient and the log-softmax gradient (N, V):
four tensors of the size of the largest activation of a small language model, each a pass over memory
and a fresh allocation. Here the tokens are processed in chunks of rows. For each chunk the logits are
computed, their softmax turned in place into the gradient of the loss with respect to them (softmax −
one-hot, the well-known closed form), and folded at once into the gradients of the hidden states and of
the weight. Nothing of size (N, V) outlives a chunk; backward only scales the
two stored gradients by grad_output / n_tokens. The math is that of `F.cross_entropy` (mean over the
non-ignored tokens); only the summation order differs. The same idea is Liger-Kernel's fused linear
cross-entropy (Hsu et al., 2024) and "Cut Your Losses in Large-Vocabulary Language Models"
(Wijmans et al., 2024).
"""

from __future__ import annotations

import bisect
from typing import Optional

import torch


def _chunk_loss_and_grad(logits, target, valid, probs):
    """Per-row losses (c,) of one chunk of fp32 logits (c, V), and ∂loss_row/∂logits = softmax − one-hot,
    written into `probs` (c, V).

    One softmax kernel does the exponentials; the log-sum-exp comes out of it for free: the softmax at
    the row's largest logit is exp(0)/Σexp(x − max), the row's largest probability, so
    lse = max − log(max(p)), which never underflows (max(p) ≥ 1/V), unlike −log(p[target]).
    """
    peak = logits.amax(1, keepdim=True)  # (c, 1); amax, not max: indices cost 7x more
    picked = logits.gather(1, target[:, None])  # (c, 1) logit of the right token
    torch.softmax(logits, 1, out=probs)  # into a reused buffer: a fresh (c, V) per chunk costs page faults
    lse = peak - probs.amax(1, keepdim=True).log()
    loss = torch.where(valid, (lse - picked).squeeze(1), 0.0)
    probs.scatter_add_(1, target[:, None], torch.full_like(picked, -1.0))  # minus the one-hot
    return loss, probs


def _add_weight_grad(acc, grad, h, first: bool) -> None:
    """acc (V, C), fp32, = (first) or += gradᵀ·h of one chunk; in one GEMM when everything is fp32."""
    if acc.dtype == grad.dtype:
        torch.mm(grad.t(), h, out=acc) if first else acc.addmm_(grad.t(), h)
    else:
        part = torch.mm(grad.t(), h)  # low precision product, summed over chunks in fp32
        acc.copy_(part) if first else acc.add_(part)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """loss = mean over non-ignored rows of cross_entropy(hidden @ weightᵀ, labels); see `linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index: int, chunk_size: int, need_grad: bool):
        N = hidden.shape[0]
        valid = labels != ignore_index  # (N,)
        target = torch.where(valid, labels, 0)  # ignored rows read a dummy id; their loss and gradient are zeroed
        ignored = (~valid).nonzero().squeeze(1)  # sorted row indices
        bounds = ignored.tolist() if need_grad else []  # one host sync per call, to slice `ignored` per chunk
        need_h, need_w = need_grad and ctx.needs_input_grad[0], need_grad and ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_h else None
        # fp32 accumulator: in bf16/fp16, partial sums rounded chunk after chunk would lose bits
        grad_weight = torch.empty(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        rows, V = min(chunk_size, N), weight.shape[0]  # both buffers are reused by every chunk: no allocation churn
        buffer, probs = hidden.new_empty(rows, V), hidden.new_empty(rows, V, dtype=torch.float32)
        losses = [hidden.new_zeros(0, dtype=torch.float32)]  # no rows: 0 / 0 = nan, as F.cross_entropy
        for start in range(0, N, chunk_size):
            h = hidden[start:start + chunk_size]  # (c, C)
            end = start + h.shape[0]
            logits = torch.mm(h, weight.t(), out=buffer[:h.shape[0]]).float()  # (c, V); a no-op cast in fp32
            loss, grad = _chunk_loss_and_grad(logits, target[start:end], valid[start:end], probs[:h.shape[0]])
            losses.append(loss)
            if not (need_h or need_w):
                continue
            lo, hi = bisect.bisect_left(bounds, start), bisect.bisect_left(bounds, end)
            if hi > lo:
                grad.index_fill_(0, ignored[lo:hi] - start, 0.0)
            grad = grad.to(hidden.dtype)
            if need_h:
                torch.mm(grad, weight, out=grad_hidden[start:end])  # (c, C)
            if need_w:
                _add_weight_grad(grad_weight, grad, h, first=start == 0)
        n_valid = valid.sum()
        ctx.save_for_backward(grad_hidden, grad_weight, n_valid)
        ctx.weight_dtype = weight.dtype
        return torch.cat(losses).sum() / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, n_valid = ctx.saved_tensors
        scale = grad_loss.float() / n_valid.clamp(min=1)  # nothing to learn from: zero gradients, as torch gives
        if grad_hidden is not None:
            grad_hidden = grad_hidden * scale.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * scale).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,  # (..., C)
    weight: torch.Tensor,  # (V, C), the output head (an nn.Linear weight, tied or not)
    labels: torch.Tensor,  # (...), the target token of each row; ignore_index = no loss
    ignore_index: int = -100,
    chunk_size: Optional[int] = 512,
) -> torch.Tensor:
    """`F.cross_entropy(hidden @ weight.T, labels, ignore_index=ignore_index)` (mean over the
    non-ignored tokens) without materialising the logits; the gradient is computed in the same pass.

    `chunk_size` rows are processed at a time (None: all at once). The loss and gradients equal the
    unfused ones up to float rounding in the summation order.
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} disagree on the token dims")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    hidden, labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    chunk_size = chunk_size or max(1, hidden.shape[0])
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    device = hidden.device.type
    if torch.is_autocast_enabled(device):  # compute in the autocast dtype, as the unfused head would
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        with torch.autocast(device, enabled=False):  # the function's own matmuls run as given
            return LinearCrossEntropyFunction.apply(hidden, weight, labels, ignore_index, chunk_size, need_grad)
    return LinearCrossEntropyFunction.apply(hidden, weight, labels, ignore_index, chunk_size, need_grad)
