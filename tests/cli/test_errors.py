"""Every user mistake ends in one line, `error: ...`, and exit status 2 — checked by running the `zoo`
command in its own process, as a user would (no traceback may reach the terminal)."""

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
NANO = str(ROOT / "configs/gpt/nano.yaml")
CFG = "--model.init_args.model.init_args.config."


def zoo(*argv: str, cwd: Path = ROOT) -> tuple[int, str]:
    """Run `zoo ARGV...`; returns (exit status, the one `error:` line). Fails on a traceback."""
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd)}, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return proc.returncode, errors[0]


@pytest.mark.parametrize("override, words", [
    (["--data.init_args.batch_size", "0"], ["batch_size=0", "at least 1"]),
    ([CFG + "n_layer", "0"], ["n_layer=0", "at least 1"]),
    ([CFG + "n_layer", "-1"], ["n_layer=-1", "at least 1"]),
    ([CFG + "n_head", "5"], ["n_head=5", "must divide d_model=128"]),
    ([CFG + "window", "500"], ["window=500", "at most max_seq_len=128"]),
    ([CFG + "n_layer", "two"], ["n_layer", "expects int", "'two'"]),
    (["--trainer.max_steps", "abc"], ["trainer.max_steps", "expects int"]),
], ids=["batch_size-0", "n_layer-0", "n_layer-negative", "heads-not-dividing", "window-over-context", "not-an-int",
        "trainer-type"])
def test_bad_values_are_one_line(override, words, tmp_path):
    code, line = zoo("fit", "-c", NANO, "--data.init_args.cache_dir", str(tmp_path), *override, cwd=tmp_path)
    assert code == 2 and all(w in line for w in words), line


def test_invalid_sizes_are_refused_before_the_data_is_prepared(tmp_path):
    """Parse time: no tokenizer is trained for a config that cannot build a model."""
    code, _ = zoo("fit", "-c", NANO, "--data.init_args.cache_dir", str(tmp_path / "cache"), CFG + "n_layer", "0",
                  cwd=tmp_path)
    assert code == 2 and not (tmp_path / "cache").exists()


def test_malformed_yaml_names_the_file_and_the_place(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("trainer:\n  max_steps: [1\n  devices: 1\n")
    code, line = zoo("fit", "-c", NANO, "-c", str(bad), cwd=tmp_path)
    assert code == 2 and "broken.yaml" in line and "not valid YAML at line" in line, line


def test_missing_config_file(tmp_path):
    code, line = zoo("fit", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert code == 2 and "nope.yaml" in line and "does not exist" in line


@pytest.mark.parametrize("flag, value, words", [
    ("--temperature", "-1", ["--temperature -1", "0 (greedy) or more"]),
    ("--top_k", "0", ["--top_k 0", "at least 1"]),
    ("--top_p", "1.5", ["--top_p 1.5", "(0, 1]"]),
    ("--max_new_tokens", "0", ["--max_new_tokens 0", "at least 1"]),
])
def test_bad_sampling_settings(flag, value, words, tmp_path):
    # checked before the model is loaded: the checkpoint need not exist
    code, line = zoo("generate", "--model", str(tmp_path / "any.ckpt"), flag, value, cwd=tmp_path)
    assert code == 2 and all(w in line for w in words), line


def test_text_file_named_ckpt_is_called_text(tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("these are my notes about the run\n")
    for argv in (["generate", "--model", str(notes)], ["validate", "-c", NANO, "--ckpt_path", str(notes)]):
        code, line = zoo(*argv, cwd=tmp_path)
        assert code == 2 and "notes.ckpt" in line and "is a text file" in line and "pickles" not in line, line


def test_truncated_checkpoint(trained_checkpoint, tmp_path):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(trained_checkpoint.read_bytes()[:20000])
    for argv in (["validate", "-c", NANO, "--ckpt_path", str(cut)], ["generate", "--model", str(cut)]):
        code, line = zoo(*argv, cwd=tmp_path)
        assert code == 2 and "cut.ckpt" in line and "truncated" in line, line


def test_clip_checkpoint_does_not_generate_text(tmp_path):
    from tokenizers import Tokenizer, models

    from zoo.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    config = CLIPConfig(vocab_size=8, projection_dim=8, vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=8,
                        n_layer=1, n_head=2), text=CLIPTextConfig(max_seq_len=8, d_model=8, n_layer=1, n_head=2,
                                                                  eos_token_id=1))
    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "a": 2}, unk_token="<unk>"))
    state = {f"model.{k}": v for k, v in CLIP(config).state_dict().items()}
    ckpt = tmp_path / "model.ckpt"  # its name must not give the family away
    torch.save({"zoo": {"family": "clip", "config": asdict(config), "tokenizer": tokenizer.to_str()},
                "state_dict": state}, ckpt)
    code, line = zoo("generate", "--model", str(ckpt), "--prompt", "a", cwd=tmp_path)
    assert code == 2 and "clip" in line.lower() and "generate" in line, line
