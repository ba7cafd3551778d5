"""One FLOP accounting: the number `zoo compare` records per step (and spends its FLOPs budget by) is the
number `zoo fit`'s Throughput callback logs MFU from, and both equal torch's FLOP counter on one real
forward + backward of the family's training loss (eager attention, so every score matmul is seen)."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.throughput import measure_flops

from zoo.callbacks import Throughput
from zoo.compare import runs
from zoo.models import GPT, T5, GPTConfig, T5Config
from zoo.tasks import CausalLM, Seq2SeqLM
from zoo.tasks.objectives import OBJECTIVES, objective_of

B, T, V = 2, 16, 120


def gpt_case():
    torch.manual_seed(0)
    ids = torch.randint(4, V, (B, T))
    labels = torch.cat([ids[:, 1:], torch.full((B, 1), -100)], 1)
    batch = {"input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.long), "labels": labels}
    return CausalLM(GPT(GPTConfig(vocab_size=V, max_seq_len=T, d_model=32, n_layer=2, n_head=2, d_ff=64))), batch


def t5_case():
    torch.manual_seed(0)
    labels = torch.randint(4, V, (B, 7))
    labels[0, -2:] = -100
    batch = {"input_ids": torch.randint(4, V, (B, T)), "attention_mask": torch.ones(B, T, dtype=torch.long),
             "labels": labels}
    return Seq2SeqLM(T5(T5Config(vocab_size=V, d_model=32, d_kv=16, n_layer=1, n_head=2, d_ff=64))), batch


def callback_flops(task, batch) -> int:
    """What Throughput measures for this batch, through its per-batch hook."""
    callback = Throughput(peak_flops=1e12)
    callback.on_train_batch_start(None, task, batch, 0)
    (flops,) = callback._flops.values()
    return flops


def counted_on_a_real_step(model, batch) -> int:
    eager = runs.with_attention(model, "eager")
    loss = objective_of(eager)
    return measure_flops(eager, lambda: loss(eager, batch), lambda value: value)


@pytest.mark.parametrize("case", [gpt_case, t5_case], ids=["gpt", "t5"])
def test_benchmark_and_callback_count_the_same_flops(case):
    task, batch = case()
    recorded = runs.step_cost(task, batch)
    assert recorded["flops_per_step"] == callback_flops(task, batch)
    assert recorded["flops_per_step"] == counted_on_a_real_step(task.model, batch)
    assert recorded["tokens_per_step"] == B * T + (batch["labels"].numel() if case is t5_case else 0)
    assert recorded["flops_per_token"] == round(recorded["flops_per_step"] / recorded["tokens_per_step"])


def test_objectives_cover_every_registered_pre_training_task():
    from zoo.families import FAMILIES

    assert {f.task for f in FAMILIES.values()} == set(OBJECTIVES)


def test_causal_objective_is_the_tasks_training_loss():
    """The benchmark times the loss CausalLM trains (fused head): equal to the task's logits-then-loss."""
    task, batch = gpt_case()
    task.model.eval()  # no dropout: both sides compute one function
    with torch.no_grad():
        torch.testing.assert_close(objective_of(task.model)(task.model, batch), task._loss(batch)[0])


def test_with_attention_is_a_fresh_copy_with_that_backend():
    from zoo.blocks.attention import ScaledDotProduct

    torch.manual_seed(0)
    model = T5(T5Config(vocab_size=V, d_model=32, d_kv=16, n_layer=1, n_head=2, d_ff=64, attn_dropout=0.1))
    copy = runs.with_attention(model, "eager")
    assert copy is not model and type(copy) is T5
    kernels = [m for m in copy.modules() if isinstance(m, ScaledDotProduct)]
    assert kernels and {m.impl for m in kernels} == {"eager"} and {m.dropout for m in kernels} == {0.0}
    assert {m.dropout for m in model.modules() if isinstance(m, ScaledDotProduct)} == {0.1}  # the original kept
