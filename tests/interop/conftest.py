"""Checkpoints written by real `zoo fit` runs of every family (2 optimizer steps, shrunk from the command
line), for the export tests. Each run happens at most once per session, and only when a test asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import tiny_fit_args
from zoo.cli import main

M = "--model.init_args.model.init_args.config."
ENCODER = [f"{M}max_seq_len", "32", f"{M}d_model", "32", f"{M}n_layer", "1", f"{M}n_head", "2", f"{M}d_ff", "64"]
PRETRAIN_DATA = ["--data.init_args.vocab_size", "400", "--data.init_args.block_size", "32", "--data.init_args.batch_size", "4"]
CLASSIFY_DATA = ["--data.init_args.vocab_size", "400", "--data.init_args.max_length", "32",
                 "--data.init_args.max_per_topic", "16", "--data.init_args.batch_size", "4"]
# name: (config, overrides). Text towers keep room for the export tests' awkward strings.
FITS = {
    "bert": ("configs/bert/tiny.yaml", [*ENCODER, *PRETRAIN_DATA]),
    "t5": ("configs/t5/tiny.yaml", [f"{M}d_model", "32", f"{M}d_kv", "16", f"{M}d_ff", "64", f"{M}n_layer", "1",
                                    f"{M}n_head", "2", "--model.init_args.generate_batches", "0", *PRETRAIN_DATA]),
    "bart": ("configs/bart/tiny.yaml", [*ENCODER, "--model.init_args.generate_batches", "0", *PRETRAIN_DATA]),
    "clip": ("configs/clip/tiny.yaml", [f"{M}projection_dim", "16", f"{M}vision.d_model", "32", f"{M}vision.n_layer", "1",
                                        f"{M}vision.n_head", "2", f"{M}text.d_model", "32", f"{M}text.n_layer", "1",
                                        f"{M}text.n_head", "2", f"{M}text.max_seq_len", "48",
                                        "--data.init_args.batch_size", "16"]),
    # LLaMA/Mistral-style: RoPE, RMSNorm, SwiGLU, grouped KV heads, a sliding window shorter than the test texts
    "llama": ("configs/gpt/llama-nano.yaml", [f"{M}max_seq_len", "32", f"{M}d_model", "32", f"{M}n_layer", "1",
                                              f"{M}n_head", "4", f"{M}n_kv_head", "2", f"{M}d_ff", "64", f"{M}window", "4",
                                              "--model.init_args.sample_tokens", "4", *PRETRAIN_DATA]),
    "bert-cls": ("configs/bert/classify.yaml", [*ENCODER, *CLASSIFY_DATA]),
    "gpt-cls": ("configs/gpt/classify.yaml", [f"{M}max_seq_len", "32", f"{M}d_model", "32", f"{M}n_layer", "1",
                                              f"{M}n_head", "2", *CLASSIFY_DATA]),
}
TRAINER = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
           "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--model.init_args.warmup_steps", "1"]


def fit_args(name: str, root: Path, cache: str) -> list[str]:
    if name == "gpt":
        args = tiny_fit_args(root, cache)  # the nano GPT of tests/cli, for 2 steps
        args[args.index("--trainer.max_steps") + 1] = "2"
        return args
    config, overrides = FITS[name]
    cached = [] if name == "clip" else ["--data.init_args.cache_dir", cache]  # digits: nothing to cache
    return ["fit", "-c", config, *TRAINER, *overrides, *cached,
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root)]


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """`fitted(name)`: the checkpoint of a 2-step `zoo fit` of `name` (gpt, llama, bert, t5, bart, clip, bert-cls, gpt-cls)."""
    cache, done = str(tmp_path_factory.mktemp("cache")), {}

    def fit(name: str) -> Path:
        if name not in done:
            root = tmp_path_factory.mktemp(f"fit-{name}")
            assert main(fit_args(name, root, cache)) == 0, f"zoo fit of {name} failed"
            # last.ckpt where the config's ModelCheckpoint saves one, else Lightning's default (llama-nano)
            (done[name],) = sorted(root.rglob("last.ckpt")) or sorted(root.rglob("*.ckpt"))
        return done[name]

    return fit


@pytest.fixture(scope="session")
def trained_checkpoint(fitted):
    """A nano GPT trained for 2 steps through `zoo fit`; its last.ckpt."""
    return fitted("gpt")
