"""Interrupts that lose nothing: SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before they
kill a job) end training after the current step with a `last.ckpt` of that step, written once, on
every rank; `zoo fit ... --ckpt_path last` then continues in the same version folder.

The signal handler only raises a flag. At the end of each training batch the ranks agree (any rank
signalled → all stop, a collective like the checkpoint itself), save through the trainer as
`ModelCheckpoint` would at that step, and stop. A second signal ends the process at once.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SaveOnInterrupt(L.Callback):
    """On SIGINT/SIGTERM: finish the step, save `last.ckpt` (all ranks), stop; `signum` tells which came."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.saved: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second one: the user means it
            self._restore()
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: saving last.ckpt after this step, then stopping "
              "(send it again to quit at once)", file=sys.stderr, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signum, self.saved = None, None
        for sig in SIGNALS:  # after Lightning's own SIGTERM handler, which these replace during training
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (a notebook's worker): signals keep their default
                return

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):
            return
        self.signum = self.signum or signal.SIGTERM  # another rank was signalled
        self.saved = save_last(trainer)
        trainer.should_stop = True


def save_last(trainer: L.Trainer) -> str:
    """Write `last.ckpt` of the current step where the run's ModelCheckpoint keeps it; that callback then
    skips this step, so the file is written once."""
    cb = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    if cb is not None and cb.dirpath:
        path = str(Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}")
    else:
        path = str(Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt")
    trainer.save_checkpoint(path)
    if cb is not None:
        cb.last_model_path = path
        cb._last_global_step_saved = trainer.global_step  # ModelCheckpoint's own "already saved this step"
    return path
