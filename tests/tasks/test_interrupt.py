"""Interrupts lose nothing: a real `zoo fit` process that receives SIGINT or SIGTERM mid-epoch saves
`last.ckpt` at that step (between the ModelCheckpoint's own saves) and exits with 128 + the signal;
`--ckpt_path last` resumes in the same version folder and ends with the weights of a run that was
never interrupted, its metrics.csv one run's log."""

import csv
import os
import signal

import lightning as L
import pytest
import torch

from tests.tasks.test_resume import CONFIG, GPT, _corpus, _final_weights, _start, _wait


class SignalAtStep(L.Callback):
    """Test-only: the process sends itself `sig` (a real signal, as Ctrl-C or SLURM would) after `step` steps."""

    def __init__(self, step: int, sig: int):
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 12-step run: its final weights."""
    root = tmp_path_factory.mktemp("straight")
    _corpus(root / "corpus")
    (root / "config.yaml").write_text(CONFIG.format(corpus=root / "corpus", **GPT))
    _wait(_start(root / "config.yaml", root / "run"))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_the_step_and_resumes_in_the_same_version(sig, straight, tmp_path):
    config = straight / "config.yaml"
    send = f"{{class_path: tests.tasks.test_interrupt.SignalAtStep, init_args: {{step: 8, sig: {int(sig)}}}}}"
    run = tmp_path / "run"
    _wait(_start(config, run, "--trainer.callbacks+", send), 128 + sig)
    saved = torch.load(run / "logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == 8  # the interrupted step, not the checkpoint of step 6

    _wait(_start(config, run, "--ckpt_path", "last"))
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["version_0"]  # one run, one folder
    rows = list(csv.DictReader((run / "logs/version_0/metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert steps == list(range(12))  # before the signal, then after the resume: each step once

    expected, step_a = _final_weights(straight / "run")
    resumed, step_b = _final_weights(run)
    assert step_a == step_b == 12
    diff = max((expected[k] - resumed[k]).abs().max().item() for k in expected)
    assert diff <= 1e-6, f"resumed run differs from the uninterrupted one by {diff}"
