"""The distillation loss: chunked == unchunked (value and gradients), zero for student == teacher at α=1."""

import copy

import pytest
import torch

from tests.compress.conftest import V, tiny
from zoo.tasks.distillation import (
    Distillation, chunked_distillation_terms, distillation_loss_reference, init_from_teacher, layer_map,
)


def test_chunked_terms_equal_the_unchunked_formula():
    torch.manual_seed(0)
    hs = torch.randn(37, 16, requires_grad=True)
    w_s, w_t, ht = torch.randn(V, 16, requires_grad=True), torch.randn(V, 16), torch.randn(37, 16)
    labels = torch.randint(0, V, (37,))
    labels[::5] = -100
    alpha, T = 0.7, 2.5
    kl, ce = chunked_distillation_terms(lambda i: hs[i] @ w_s.t(), lambda i: ht[i] @ w_t.t(), labels, T, chunk_size=8)
    loss = alpha * T**2 * kl + (1 - alpha) * ce
    ref = distillation_loss_reference(hs @ w_s.t(), ht @ w_t.t(), labels, alpha, T)
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss, (hs, w_s))
    g_ref = torch.autograd.grad(ref, (hs, w_s))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "bart"])
def test_task_loss_zero_when_student_is_teacher_and_matches_reference(family):
    teacher = tiny(family)
    student = copy.deepcopy(teacher)
    task = Distillation(student, teacher=teacher, alpha=1.0, temperature=2.0, chunk_size=5)
    ids = torch.randint(3, V - 1, (2, 9))
    labels = ids.clone()
    labels[:, ::3] = -100
    batch = {"input_ids": ids, "labels": labels}
    total, ce = task.loss(batch)
    assert abs(float(total)) < 1e-5 and float(ce) > 0
    # a different student: the task's chunked loss equals the formula on full logits
    task = Distillation(tiny(family, seed=1), teacher=teacher, alpha=0.6, temperature=3.0, chunk_size=5)
    total, _ = task.loss(batch)

    def logits(m):
        if family == "gpt":
            return m(ids)
        if family == "bert":
            return m(ids)
        return m(ids, decoder_input_ids=m.shift_right(labels))

    ref = distillation_loss_reference(logits(task.model), logits(teacher), labels, 0.6, 3.0)
    torch.testing.assert_close(total, ref)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in task.model.parameters())


def test_half_depth_student_starts_from_every_other_teacher_layer():
    from zoo.models import GPT, GPTConfig

    teacher = GPT(GPTConfig(vocab_size=V, max_seq_len=32, d_model=32, n_layer=4, n_head=2))
    student = GPT(GPTConfig(vocab_size=V, max_seq_len=32, d_model=32, n_layer=2, n_head=2))
    assert layer_map(2, 4) == [0, 2] and layer_map(3, 6) == [0, 2, 4]
    init_from_teacher(student, teacher)
    assert torch.equal(student.decoder.layers[1].mlp.up_proj.weight, teacher.decoder.layers[2].mlp.up_proj.weight)
    assert torch.equal(student.embed_tokens.weight, teacher.embed_tokens.weight)


def test_teacher_of_another_family_is_refused():
    from zoo.errors import ZooError

    with pytest.raises(ZooError, match="distil within one family"):
        Distillation(tiny("gpt"), teacher=tiny("bert"))


def test_fit_saves_only_the_student(tmp_path):
    import lightning as L

    from zoo.checkpoint import model_from_checkpoint, read_checkpoint
    from zoo.models import GPT, GPTConfig

    teacher = tiny("gpt")
    student = GPT(GPTConfig(vocab_size=V, max_seq_len=32, d_model=64, n_layer=1, n_head=4, d_ff=128))
    task = Distillation(student, teacher=teacher, init_from_teacher=True, warmup_steps=1)
    ids = torch.randint(3, V - 1, (8, 17), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row[:-1], "labels": row[1:]} for row in ids]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, loader, loader)
    assert "val/ppl" in trainer.callback_metrics
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    ckpt = read_checkpoint(tmp_path / "s.ckpt")
    assert not any(k.startswith("teacher") or "_teacher" in k for k in ckpt["state_dict"])
    loaded, _ = model_from_checkpoint(tmp_path / "s.ckpt")
    assert loaded.config.n_layer == 1
    torch.testing.assert_close(loaded(ids[:, :-1]), student.eval()(ids[:, :-1]))
