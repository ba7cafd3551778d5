"""Training from the pipeline's shards: the sharded stream reads like one array, pickles as file
names, and a `zoo fit` on shards killed with SIGKILL resumes to the weights of an uninterrupted run
(across epoch boundaries: the small corpus loops several times)."""

import json
import pickle
import signal

import numpy as np
import pytest
import torch

from zoo.data import TextDataModule
from zoo.data.shards import ShardedTokens
from zoo.errors import ZooError


def test_sharded_tokens_slice_like_the_concatenated_array(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 60000, n).astype(np.uint16) for n in (5, 1, 17, 9)]
    files = []
    for i, part in enumerate(parts):
        files.append(str(tmp_path / f"{i}.bin"))
        part.tofile(files[-1])
    flat, tokens = np.concatenate(parts), ShardedTokens(files, "uint16")
    assert len(tokens) == len(flat) == 32
    for start, stop in [(0, 32), (3, 7), (5, 6), (4, 24), (22, 32), (10, 10), (30, 40)]:
        assert np.array_equal(tokens[start:stop], flat[start:stop])
    assert tokens[-1] == flat[-1] and tokens[6] == flat[6]
    again = pickle.loads(pickle.dumps(tokens))
    assert len(pickle.dumps(tokens)) < 1000 and np.array_equal(np.asarray(again), flat)


def test_a_folder_without_shards_json_gets_a_one_line_fix(tmp_path):
    dm = TextDataModule(shards=str(tmp_path), block_size=8)
    with pytest.raises(ZooError, match="zoo data prepare"):
        dm.setup("fit")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    pytest.importorskip("datatrove")
    from tests.data.test_pipeline import config, make_corpus
    from zoo.data.pipeline.run import run_pipeline

    root = tmp_path_factory.mktemp("shards")
    make_corpus(root / "corpus")
    return run_pipeline(config(root / "corpus", root / "out"))


def test_data_module_reads_the_shards_with_their_tokenizer(shards):
    dm = TextDataModule(shards=str(shards), block_size=16, batch_size=4)
    dm.setup("fit")
    assert dm.model_vocab_size == len(json.loads((shards / "tokenizer.json").read_text())["model"]["vocab"])
    assert dm.tokenizer_path == str(shards / "tokenizer.json")
    train = dm.tokens("train")
    assert isinstance(train, ShardedTokens) and len(train) == sum(
        np.fromfile(f, dtype=np.uint16).size for f in sorted((shards / "train").glob("*.bin")))
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])


@pytest.mark.slow
def test_sigkill_then_resume_on_shards_matches_an_uninterrupted_run(shards, tmp_path):
    from tests.tasks.test_resume import CONFIG, GPT, _final_weights, _start, _wait

    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(corpus="pydoc", **GPT))
    kill = "{class_path: tests.tasks.test_resume.KillAtStep, init_args: {step: 8}}"
    on_shards = ("--data.init_args.shards", str(shards))
    straight = _start(config, tmp_path / "straight", *on_shards)
    killed = _start(config, tmp_path / "killed", *on_shards, "--trainer.callbacks+", kill)
    _wait(straight), _wait(killed, -signal.SIGKILL)
    state = torch.load(next((tmp_path / "killed").rglob("last.ckpt")), weights_only=True)
    assert state["global_step"] == 6
    _wait(_start(config, tmp_path / "killed", *on_shards, "--ckpt_path", "last"))
    a, step_a = _final_weights(tmp_path / "straight")
    b, step_b = _final_weights(tmp_path / "killed")
    assert step_a == step_b == 12
    assert a["model.embed_tokens.weight"].shape[0] == b["model.embed_tokens.weight"].shape[0] <= 400  # the shards' tokenizer
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
