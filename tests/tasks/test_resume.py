"""Exact resumption: a `zoo fit` killed with SIGKILL mid-epoch and resumed with `--ckpt_path last`
ends with the weights of a run that was never interrupted (CPU, deterministic, dropout on, data
shuffled, an epoch boundary and validations after the checkpoint). Also the resumable sampler's
DistributedSampler semantics and mid-epoch position, and BERT's per-example masks after a resume."""

import csv
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from zoo.data import MaskedLMDataModule
from zoo.data.sampling import ResumableLoader, ResumableSampler

ROOT = Path(__file__).resolve().parents[2]


class KillAtStep(L.Callback):
    """Test-only: the process kills itself with SIGKILL (no cleanup, no checkpoint) after `step` steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- the sampler
def test_sampler_is_distributed_sampler_split_over_ranks_and_resumes_mid_epoch():
    data = list(range(23))
    for rank in range(3):
        ours, torch_own = ResumableSampler(data, seed=5, num_replicas=3, rank=rank), DistributedSampler(
            data, num_replicas=3, rank=rank, shuffle=True, seed=5)
        for epoch in (0, 4):
            ours.set_epoch(epoch), torch_own.set_epoch(epoch)
            assert list(ours) == list(torch_own)
    keyed = ResumableSampler(data, seed=5, epoch_keys=True)
    keyed.set_epoch(2)
    assert sorted(keyed) == [2 * 23 + i for i in range(23)]  # NoisedChunks reads the epoch off the key

    loader = ResumableLoader(data, batch_size=4, sampler=ResumableSampler(data, seed=1))
    loader.sampler.set_epoch(3)
    full = [b.tolist() for b in loader]
    it = iter(loader)
    [next(it) for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 3, "batches": 2}
    fresh = ResumableLoader(data, batch_size=4, sampler=ResumableSampler(data, seed=1))
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(3)
    assert [b.tolist() for b in fresh] == full[2:]  # the rest of the epoch, nothing repeated or lost
    fresh.sampler.set_epoch(4)
    assert len(list(fresh)) == len(full)  # the next epoch starts at its beginning


# ----------------------------------------------------------------------------- end to end
def _corpus(folder: Path) -> None:
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "qua", "dor", "pel"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(80)]
    folder.mkdir()
    for i in range(30):
        sentences = (" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))).capitalize() + "."
                     for _ in range(rng.randint(4, 8)))
        (folder / f"doc{i:02d}.txt").write_text(" ".join(sentences), encoding="utf-8")


CONFIG = """
seed_everything: 7
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 12
  deterministic: true
  limit_train_batches: 5        # epochs of 5 steps: the kill lands in epoch 1, the run ends in epoch 2
  val_check_interval: 3         # validations right after checkpoints draw from torch's generator
  check_val_every_n_epoch: null
  limit_val_batches: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, every_n_train_steps: 3, save_top_k: 0}}
model:
  class_path: {task}
  init_args:
    model:
      class_path: {model}
      init_args:
        config: {{{config}, dropout: 0.1}}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {{lr: 0.01}}
    warmup_steps: 2
{task_args}
data:
  class_path: {data}
  init_args:
    source: {corpus}
    vocab_size: 300
    block_size: 16
    batch_size: 4
"""

GPT = dict(task="zoo.tasks.CausalLM", model="zoo.models.GPT", data="zoo.data.TextDataModule",
           config="max_seq_len: 16, d_model: 16, n_layer: 1, n_head: 2", task_args='    sample_prompt: ""')


def _start(config: Path, root: Path, *extra: str) -> subprocess.Popen:
    """`zoo fit` in its own process, logging and checkpointing under `root`, its token cache in `root`."""
    logger = f"{{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: logs}}}}"
    cmd = [sys.executable, "-m", "zoo.cli", "fit", "-c", str(config), "--trainer.default_root_dir", str(root),
           "--trainer.logger", logger, "--data.init_args.cache_dir", str(root / "cache"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, returncode: int = 0) -> None:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == returncode, stderr[-3000:]


def _final_weights(root: Path) -> tuple[dict, int]:
    """Weights and step of the newest last.ckpt under a run folder."""
    newest = max(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    ckpt = torch.load(newest, weights_only=True)
    return ckpt["state_dict"], ckpt["global_step"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    _corpus(tmp_path / "corpus")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(corpus=tmp_path / "corpus", **GPT))
    kill = "{class_path: tests.tasks.test_resume.KillAtStep, init_args: {step: 8}}"

    first_run = _start(config, tmp_path / "straight")
    # Killed after step 8 (epoch 1, batch 2); its last checkpoint is from step 6 (epoch 1, batch 0).
    killed = _start(config, tmp_path / "killed", "--trainer.callbacks+", kill)
    _wait(first_run), _wait(killed, -signal.SIGKILL)
    state = torch.load(next((tmp_path / "killed").rglob("last.ckpt")), weights_only=True)
    assert state["global_step"] == 6
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    _wait(_start(config, tmp_path / "killed", "--ckpt_path", "last"))
    # It resumed (a fresh start would also end equal): the log holds each step once, steps 1..6 from the
    # killed run (rows past its checkpoint dropped), 7..12 from the resumed one; a fresh start would repeat 1..6.
    assert not (tmp_path / "killed/logs/version_1").exists()  # the resumed run logs in the same version folder
    rows = csv.DictReader((tmp_path / "killed/logs/version_0/metrics.csv").open())
    assert sorted(int(r["step"]) for r in rows if r["train/loss"]) == list(range(12))

    straight, step_a = _final_weights(tmp_path / "straight")
    resumed, step_b = _final_weights(tmp_path / "killed")
    assert step_a == step_b == 12
    first = state["state_dict"]
    assert max((straight[k] - first[k]).abs().max().item() for k in straight) > 1e-3  # training after step 6 moved
    diff = max((straight[k] - resumed[k]).abs().max().item() for k in straight)
    assert diff <= 1e-6, f"resumed run differs from the uninterrupted one by {diff}"


def test_masked_lm_loader_resumes_with_the_same_masks(tmp_path):
    """BERT's dynamic masks are seeded per (epoch, example): a resumed loader repeats them exactly."""
    _corpus(tmp_path / "corpus")
    dm = MaskedLMDataModule(source=str(tmp_path / "corpus"), vocab_size=300, block_size=16, batch_size=4,
                            cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    full = list(loader)
    it = iter(loader)
    next(it), next(it), next(it)
    resumed = dm.train_dataloader()
    resumed.load_state_dict(loader.state_dict())
    resumed.sampler.set_epoch(1)
    rest = list(resumed)
    assert len(full) > 4 and len(rest) == len(full) - 3
    assert all(torch.equal(a[k], b[k]) for a, b in zip(full[3:], rest) for k in a)
    loader.sampler.set_epoch(2)
    again = {tuple(row.tolist()) for batch in loader for row in batch["input_ids"]}
    assert again != {tuple(row.tolist()) for batch in full for row in batch["input_ids"]}  # fresh masks per epoch
