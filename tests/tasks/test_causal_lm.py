"""The base task's optimizer plumbing and the causal-LM objective."""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.models import GPT, GPTConfig
from zoo.tasks import CausalLM, lr_multiplier, parameter_groups


def test_warmup_then_cosine():
    f = lambda s: lr_multiplier(s, warmup_steps=10, total_steps=110, schedule="cosine", min_lr_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert lr_multiplier(50, 10, 110, "linear", 0.0) == pytest.approx(0.6)
    assert lr_multiplier(50, 10, 110, "constant", 0.0) == 1.0


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, max_seq_len=16, d_model=32, n_layer=2, n_head=4))


def test_parameter_groups_decay_only_matrices():
    model = tiny_gpt()
    decay, no_decay = parameter_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"])
    assert {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]} == {"weight", "bias"}
    assert all("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_loss_is_next_token_cross_entropy():
    task = CausalLM(tiny_gpt())
    ids = torch.randint(0, 50, (2, 9))
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    loss, logits = task._loss(batch)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1)).item())
    assert loss.item() == pytest.approx(math.log(50), rel=0.1)  # an untrained model is near uniform


def test_training_reduces_loss_on_a_fixed_batch():
    task = CausalLM(tiny_gpt())
    ids = torch.randint(0, 50, (4, 17), generator=torch.Generator().manual_seed(3))
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    opt = torch.optim.AdamW(parameter_groups(task.model), lr=3e-3)
    first = task._loss(batch)[0].item()
    for _ in range(40):
        opt.zero_grad()
        task._loss(batch)[0].backward()
        opt.step()
    assert task._loss(batch)[0].item() < 0.5 * first


def test_training_step_uses_the_fused_loss_and_its_perplexity_matches_the_logits():
    """Training goes through `GPT(..., labels=)` (no logits); its loss, gradients and the logged
    perplexity equal cross-entropy and torchmetrics' Perplexity on the logits, padding included."""
    import warnings

    from torchmetrics.text import Perplexity

    task = CausalLM(tiny_gpt())
    assert task.fused_loss
    calls, forward = [], task.model.forward
    task.model.forward = lambda *a, **kw: calls.append(sorted(kw)) or forward(*a, **kw)  # record how it is called
    g = torch.Generator().manual_seed(5)
    batches = []
    for pad in (0, 5):  # the second batch has ignored positions, so the token weighting matters
        ids = torch.randint(0, 50, (2, 13), generator=g)
        labels = ids[:, 1:].clone()
        labels[1, labels.shape[1] - pad:] = -100
        batches.append({"input_ids": ids[:, :-1], "labels": labels})
    reference = Perplexity(ignore_index=-100)
    for batch in batches:
        with warnings.catch_warnings():  # no trainer attached here: self.log only warns
            warnings.simplefilter("ignore")
            loss = task.training_step(batch, 0)
        fused_grads = torch.autograd.grad(loss, list(task.model.parameters()))
        ref_loss, logits = task._loss(batch)
        ref_grads = torch.autograd.grad(ref_loss, list(task.model.parameters()))
        assert loss.dim() == 0 and "labels" in calls[-2] and "labels" not in calls[-1]  # fused, then the logits
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
        for g_fused, g_ref in zip(fused_grads, ref_grads):
            torch.testing.assert_close(g_fused, g_ref, rtol=1e-5, atol=1e-5 * g_ref.abs().max().item() + 1e-9)
        reference.update(logits.detach(), batch["labels"])
    assert task.train_ppl.compute().item() == pytest.approx(reference.compute().item(), rel=1e-5)
