import pytest

from zoo.cli import main

TINY = [
    "--model.init_args.model.init_args.config.d_model", "32",
    "--model.init_args.model.init_args.config.n_layer", "1",
    "--model.init_args.model.init_args.config.n_head", "2",
    "--model.init_args.model.init_args.config.max_seq_len", "32",
    "--model.init_args.warmup_steps", "2",
    "--model.init_args.sample_tokens", "4",
    "--data.init_args.vocab_size", "400",
    "--data.init_args.block_size", "32",
    "--data.init_args.batch_size", "4",
    "--trainer.max_steps", "4",
    "--trainer.val_check_interval", "2",
    "--trainer.limit_val_batches", "2",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("zoo-cache"))


def tiny_fit_args(root, cache_dir, config="configs/gpt/nano.yaml"):
    return ["fit", "-c", config, *TINY, "--data.init_args.cache_dir", cache_dir,
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root)]


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, cache_dir):
    """A nano GPT trained for 4 steps through `zoo fit`; returns its last.ckpt."""
    root = tmp_path_factory.mktemp("run")
    assert main(tiny_fit_args(root, cache_dir)) == 0
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, "zoo fit wrote no last.ckpt"
    return ckpts[0]
