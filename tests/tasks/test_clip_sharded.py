"""CLIP under FSDP2: its scalar `logit_scale` (which FSDP2 cannot shard as a 0-dim tensor) trains as a
(1,) vector, and the sharded checkpoint folder the run writes loads back into a plain model, for
`zoo generate`, `zoo inspect` and `init_from`."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.checkpoint import is_sharded_checkpoint, load_model
from zoo.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from zoo.parallel import scalars_as_vectors

ROOT = Path(__file__).resolve().parents[2]


def tiny_clip() -> CLIP:
    return CLIP(CLIPConfig(vocab_size=50, projection_dim=16,
                           vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=16, n_layer=1, n_head=2),
                           text=CLIPTextConfig(max_seq_len=8, d_model=16, n_layer=1, n_head=2)))


def test_scalar_parameters_become_vectors_and_load_either_way():
    model = tiny_clip()
    before = model.logit_scale.item()
    pixels, ids = torch.randn(3, 3, 8, 8), torch.randint(0, 50, (3, 8))
    want = model(pixels, ids).logits_per_image
    scalars_as_vectors(model)
    assert model.logit_scale.shape == (1,) and model.logit_scale.item() == before
    out = model(pixels, ids)
    assert out.logit_scale.shape == () and torch.allclose(out.logits_per_image, want)
    plain = tiny_clip()
    plain.load_state_dict(model.state_dict())  # (1,) into ()
    assert plain.logit_scale.shape == () and plain.logit_scale.item() == before
    model.load_state_dict(tiny_clip().state_dict())  # () into (1,)
    assert model.logit_scale.shape == (1,)


@pytest.mark.slow
def test_clip_trains_under_fsdp2_and_its_sharded_checkpoint_loads(tmp_path):
    cmd = [sys.executable, "-m", "zoo.cli", "fit", "-c", "configs/clip/tiny.yaml", "-c", "configs/trainer/cpu-fsdp.yaml",
           "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
           "--trainer.check_val_every_n_epoch", "null", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
           "--data.init_args.batch_size", "16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    (ckpt,) = (tmp_path / "logs").glob("version_*/checkpoints/last.ckpt")
    assert is_sharded_checkpoint(ckpt)  # a folder of per-rank shards
    model, tokenizer = load_model(str(ckpt))
    assert isinstance(model, CLIP) and tokenizer is not None
    assert model.logit_scale.shape == () and math.isfinite(model.logit_scale.item())
    assert model.logit_scale.item() != pytest.approx(math.log(1 / 0.07), abs=1e-7)  # trained, then gathered
    export_and_load_in_transformers(ckpt, model, tokenizer, tmp_path / "hf")
    # one process cannot resume the shards: one line says which strategy can
    validate = [sys.executable, "-m", "zoo.cli", "validate", "-c", "configs/clip/tiny.yaml", "--ckpt_path", str(ckpt),
                "--trainer.default_root_dir", str(tmp_path / "v"), "--trainer.logger", "false"]
    proc = subprocess.run(validate, cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "configs/trainer/cpu-fsdp.yaml" in errors[0]


def export_and_load_in_transformers(ckpt: Path, model: CLIP, tokenizer, out: Path) -> None:
    """`zoo export --model <sharded folder> --out DIR --format hf`, and transformers' AutoModel (CLIPModel)
    gives the zoo model's image-text logits (fp32, eager attention) within 1e-4."""
    transformers = pytest.importorskip("transformers")
    from dataclasses import replace

    from zoo.cli import main

    assert main(["export", "--model", str(ckpt), "--out", str(out), "--format", "hf"]) == 0
    hf = transformers.AutoModel.from_pretrained(out, attn_implementation="eager").eval()
    assert type(hf).__name__ == "CLIPModel" and hf.dtype == torch.float32
    eager = CLIP(replace(model.config, attn_impl="eager"))
    eager.load_state_dict(model.state_dict())
    eager.eval()
    eos = tokenizer.token_to_id("<|endoftext|>")
    rows = [tokenizer.encode(t).ids + [eos] for t in ("a photo of the digit 3", "seven", "a handwritten 0 or 8")]
    T = max(map(len, rows))
    ids = torch.tensor([r + [eos] * (T - len(r)) for r in rows])  # pooled at the first <|endoftext|>
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = eager(pixels, ids, mask).logits_per_image
        theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_image
    assert ours.shape == (2, 3) and (ours - theirs).abs().max().item() <= 1e-4
