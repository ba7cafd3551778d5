"""Non-finite loss handling: a NaN injected into the loss at one step is skipped (weights and optimizer
moments untouched by that step, training goes on and still reaches max_steps) or stops training with
one line naming the step, as configured; under DDP (2 gloo processes) a NaN on one rank makes both skip."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from zoo.callbacks import NonFiniteLoss
from zoo.errors import ZooError
from zoo.models import GPT
from zoo.models.gpt import GPTConfig
from zoo.tasks import CausalLM

NAN_STEP, STEPS = 2, 5


class NaNAtStep(CausalLM):
    """The loss times NaN at one optimizer step (and on one rank, when `rank` is set): NaN gradients too."""

    def __init__(self, nan_step: int, rank=None, **kwargs):
        super().__init__(**kwargs)
        self.nan_step, self.nan_rank = nan_step, rank

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == self.nan_step and self.nan_rank in (None, self.global_rank):
            return loss * float("nan")
        return loss


class Snapshots(L.Callback):
    """Weights and AdamW moments at the start and end of every batch."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def _copy(pl_module, trainer):
        opt = trainer.optimizers[0]
        weights = [p.detach().clone() for p in pl_module.parameters()]
        moments = [opt.state[p]["exp_avg"].clone() for p in pl_module.parameters() if p in opt.state]
        return weights, moments

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = self._copy(pl_module, trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = self._copy(pl_module, trainer)


def build(rank=None) -> NaNAtStep:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, max_seq_len=8, d_model=16, n_layer=1, n_head=2, dropout=0.0))
    return NaNAtStep(NAN_STEP, rank, model=model, warmup_steps=1, sample_prompt="")


def batches(n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (n * 2, 9), generator=g)
    rows = [{"input_ids": r[:-1], "labels": r[1:]} for r in ids]
    return DataLoader(rows, batch_size=2)


def fit(action: str, snapshots=None) -> tuple[L.Trainer, NonFiniteLoss]:
    guard = NonFiniteLoss(action=action)
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[guard] + ([snapshots] if snapshots else []))
    trainer.fit(build(), train_dataloaders=batches())
    return trainer, guard


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_skip_leaves_the_step_out_and_training_goes_on():
    snaps = Snapshots()
    trainer, guard = fit("skip", snaps)
    assert guard.skipped_steps == 1 and trainer.global_step == STEPS
    weights_before, moments_before = snaps.before[NAN_STEP]
    weights_after, moments_after = snaps.after[NAN_STEP]
    assert _same(weights_before, weights_after) and _same(moments_before, moments_after)
    assert not _same(snaps.before[NAN_STEP + 1][0], snaps.after[NAN_STEP + 1][0])  # the next step trains
    assert not _same(snaps.before[NAN_STEP - 1][0], snaps.after[NAN_STEP - 1][0])  # so did the one before
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_without_the_guard_the_nan_reaches_the_weights():
    """The injection is real: left alone, one NaN step poisons every weight it touches."""
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(build(), train_dataloaders=batches())
    assert not all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_stop_raises_one_line_naming_the_step():
    with pytest.raises(ZooError) as err:
        fit("stop")
    message = str(err.value)
    assert "\n" not in message
    assert f"non-finite loss at global step {NAN_STEP} (epoch 0, batch {NAN_STEP})" in message
    assert "learning rate" in message and "bf16-mixed" in message


def test_unknown_action_is_a_clear_error():
    with pytest.raises(ZooError, match="'skip' or 'stop'"):
        NonFiniteLoss(action="ignore")


# ----------------------------------------------------------------------------- DDP
def _worker(out: str) -> None:
    """One of two processes started with RANK/LOCAL_RANK/WORLD_SIZE set: Lightning joins them, launching nothing."""
    torch.set_num_threads(1)
    snaps = Snapshots()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[NonFiniteLoss(action="skip"), snaps])
    trainer.fit(build(rank=1), train_dataloaders=batches())
    weights = [p.detach() for p in trainer.lightning_module.parameters()]
    report = {
        "skipped": trainer.callbacks[0].skipped_steps,
        "step": trainer.global_step,
        "unchanged": _same(snaps.before[NAN_STEP][0], snaps.after[NAN_STEP][0]),
        "finite": all(bool(torch.isfinite(w).all()) for w in weights),
        "checksum": float(sum(w.double().sum() for w in weights)),
    }
    Path(f"{out}.{trainer.global_rank}").write_text(json.dumps(report))


@pytest.mark.slow
def test_ddp_ranks_agree_to_skip_a_nan_seen_on_one_rank(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "report"
    code = f"from tests.tasks.test_nonfinite import _worker; _worker({str(out)!r})"
    root = Path(__file__).resolve().parents[2]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]
    reports = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["skipped"] == 1 and report["step"] == STEPS and report["unchanged"] and report["finite"]
    assert reports[0]["checksum"] == reports[1]["checksum"]  # the ranks still hold the same model
