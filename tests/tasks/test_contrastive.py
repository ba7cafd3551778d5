"""The Contrastive task: the InfoNCE loss, DDP equivalence, retrieval recall and zero-shot accuracy on
embeddings whose answers are known by construction, the logit-scale clamp, and a short CLI run."""

import csv
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import ZooError
from zoo.models import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from zoo.tasks import Contrastive
from zoo.tasks.contrastive import (
    caption_keys,
    check_data_matches_model,
    contrastive_loss,
    recall_at_k,
    zero_shot_accuracy,
    zero_shot_classifier,
)

ROOT = Path(__file__).resolve().parents[2]


def tiny_clip(eos: int = 0) -> CLIP:
    torch.manual_seed(0)
    return CLIP(CLIPConfig(vocab_size=40, projection_dim=8,
                           vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=16, n_layer=1, n_head=2),
                           text=CLIPTextConfig(max_seq_len=8, d_model=16, n_layer=1, n_head=2, eos_token_id=eos)))


# ----------------------------------------------------------------------------- loss
def test_loss_is_symmetric_cross_entropy_on_the_diagonal():
    g = torch.Generator().manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 5, generator=g), dim=-1), F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.t()
    # written out: -log softmax of the diagonal, over rows and over columns
    rows = -(logits.diag() - logits.logsumexp(dim=1)).mean()
    cols = -(logits.diag() - logits.logsumexp(dim=0)).mean()
    assert torch.allclose(contrastive_loss(img, txt, scale), (rows + cols) / 2, atol=1e-6)
    perfect = F.normalize(torch.eye(4), dim=-1)
    assert contrastive_loss(perfect, perfect, torch.tensor(100.0)) < 1e-6


def test_ddp_matches_one_process_on_the_global_batch(tmp_path):
    """2 gloo processes × 4 pairs give the loss and gradients of 1 process × 8 pairs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "report.json"
    helper = Path(__file__).with_name("ddp_contrastive_helper.py")
    run = subprocess.run([sys.executable, str(helper), str(port), str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["names_match"]
    assert abs(report["ddp_loss"] - report["single_loss"]) <= 1e-5, report
    assert report["max_grad_diff"] <= 1e-5, report
    assert report["max_grad"] > 1e-3 and report["logit_scale_grad"] != 0.0  # the gradients are not trivially zero


# ----------------------------------------------------------------------------- metrics
def test_recall_at_k_on_ranks_known_by_construction():
    # query q's positive (candidate q) sits at rank q: exactly q candidates score above it
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.3],
                        [0.8, 0.7, 0.1, 0.2],
                        [0.8, 0.9, 0.5, 0.4],
                        [0.5, 0.6, 0.7, 0.4]])
    pos = torch.eye(4, dtype=torch.bool)
    assert [recall_at_k(sim, pos, k).item() for k in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 1.0]
    # a second positive at rank 0 makes query 3 a hit at k = 1
    pos[3, 2] = True
    assert recall_at_k(sim, pos, 1).item() == 0.5


def test_recall_at_k_agrees_with_torchmetrics_hit_rate():
    from torchmetrics.retrieval import RetrievalHitRate

    g = torch.Generator().manual_seed(3)
    sim = torch.randn(12, 15, generator=g)
    pos = torch.zeros(12, 15, dtype=torch.bool)
    pos[torch.arange(12), torch.randint(0, 15, (12,), generator=g)] = True
    pos[torch.arange(0, 12, 3), torch.randint(0, 15, (4,), generator=g)] = True
    indexes = torch.arange(12)[:, None].expand(12, 15)
    for k in (1, 3, 5):
        ref = RetrievalHitRate(top_k=k)(sim.flatten(), pos.flatten(), indexes=indexes.flatten())
        assert math.isclose(recall_at_k(sim, pos, k).item(), ref.item(), abs_tol=1e-6)


def test_caption_keys_ignore_padding_and_tell_captions_apart():
    ids = torch.tensor([[5, 6, 0, 1, 1], [5, 6, 0, 9, 9], [6, 5, 0, 1, 1], [5, 6, 6, 0, 1]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    keys = caption_keys(ids, mask)
    assert keys[0] == keys[1]
    assert len({keys[0].item(), keys[2].item(), keys[3].item()}) == 3
    assert caption_keys(ids[:1, :3])[0] == keys[0]  # same caption, no padding at all


def test_zero_shot_on_embeddings_known_by_construction():
    classes, templates = ["cat", "dog", "bird"], ["a {}", "the {}"]
    prompts = [t.format(c) for c in classes for t in templates]
    # each class's two prompts point to its axis ± a template-specific wobble that averages out
    table = {}
    for i, c in enumerate(classes):
        for j, t in enumerate(templates):
            v = torch.zeros(4)
            v[i], v[3] = 1.0, 0.5 if j == 0 else -0.5
            table[t.format(c)] = v

    def tokenize(texts):
        return {"input_ids": torch.tensor([[prompts.index(t)] for t in texts]), "attention_mask": torch.ones(len(texts), 1)}

    def encode_text(ids, mask):
        return torch.stack([table[prompts[i]] for i in ids[:, 0].tolist()])

    class_embeds = zero_shot_classifier(encode_text, tokenize, classes, templates)
    assert torch.allclose(class_embeds, torch.eye(3, 4), atol=1e-6)
    images = F.normalize(torch.tensor([[1.0, 0.2, 0, 0], [0.1, 1, 0, 0], [0, 0, 1, 0.9], [0.9, 1, 0, 0]]), dim=-1)
    labels = torch.tensor([0, 1, 2, 0])  # the last image looks more like a dog than the cat it is
    assert zero_shot_accuracy(images, class_embeds, labels).item() == 0.75


# ----------------------------------------------------------------------------- task plumbing
def test_logit_scale_is_clamped_at_ln_100():
    task = Contrastive(tiny_clip())
    with torch.no_grad():
        task.model.logit_scale.fill_(7.0)
    task.clamp_logit_scale()
    assert task.model.logit_scale.item() == pytest.approx(math.log(100.0))


def test_data_and_model_must_agree_on_end_of_text():
    class Data:
        eos_token_id, max_length = 0, 8

    check_data_matches_model(tiny_clip(eos=0), Data())
    with pytest.raises(ZooError, match="eos_token_id: 0"):
        check_data_matches_model(tiny_clip(eos=3), Data())
    Data.max_length = 20
    with pytest.raises(ZooError, match="max_seq_len"):
        check_data_matches_model(tiny_clip(eos=0), Data())


def read_metrics(folder: Path) -> list[dict]:
    (csv_file,) = folder.rglob("metrics.csv")
    with open(csv_file) as f:
        return list(csv.DictReader(f))


def test_fit_through_the_cli(tmp_path):
    """A very small CLIP trains a few steps from configs/clip/tiny.yaml: loss falls, metrics are logged."""
    from zoo.checkpoint import model_from_checkpoint
    from zoo.cli import main

    cfg = "--model.init_args.model.init_args.config."
    code = main([
        "fit", "-c", str(ROOT / "configs/clip/tiny.yaml"),
        "--trainer.max_steps", "12", "--trainer.val_check_interval", "12", "--trainer.log_every_n_steps", "1",
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
        f"{cfg}vision.n_layer", "1", f"{cfg}vision.d_model", "32", f"{cfg}text.n_layer", "1", f"{cfg}text.d_model", "32",
        "--model.init_args.warmup_steps", "2", "--model.init_args.optimizer.init_args.lr", "0.003",
        "--data.batch_size", "32",
    ])
    assert code == 0
    rows = read_metrics(tmp_path)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < losses[0] - 0.05, losses
    val = [r for r in rows if r.get("val/zero_shot_acc")]
    assert val, "zero-shot accuracy was not logged"
    for key in ("val/i2t_R@1", "val/i2t_R@5", "val/t2i_R@1", "val/t2i_R@5", "val/zero_shot_acc"):
        assert 0.0 <= float(val[-1][key]) <= 1.0
    scales = [float(r["train/logit_scale"]) for r in rows if r.get("train/logit_scale")]
    assert all(0 < s <= 100.0 + 1e-4 for s in scales)
    (last,) = tmp_path.rglob("last.ckpt")
    model, tokenizer = model_from_checkpoint(last)
    assert isinstance(model, CLIP) and model.config.vision.d_model == 32 and tokenizer is not None
