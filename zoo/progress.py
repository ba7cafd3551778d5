"""What a run shows while and after it trains: a progress bar counted in optimizer steps, plain log
lines when the output is not a terminal, loss curves as a PNG, and the closing summary.

- `StepProgress`: one bar `step 140/600` for the whole run (not per epoch, so `max_steps` configs
  do not read `Epoch 0/-2`; a resumed run starts at its step), with loss and tokens/s. When
  stdout or stderr is not a terminal (a CI log, `nohup`, a SLURM job), where a bar shows only its
  last frame, it prints a plain line every `every_n_steps` instead: step, loss, tokens/s, ETA.
- `plot_losses`: train and validation loss against the step, from the run's `metrics.csv`.
- `summary_lines`: checkpoints, final metrics, log folder and the next commands.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count


def _is_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _loss_key(metrics: dict) -> Optional[str]:
    keys = [k for k in metrics if k.startswith("train") and k.endswith("loss")]
    return min(keys, key=len) if keys else None


class StepProgress(ProgressBar):
    """Progress in optimizer steps out of `max_steps`, as a bar on a terminal, as lines elsewhere.

    Args:
        every_n_steps: steps between plain lines when the output is not a terminal (None: about 20
            lines per run, at least every 10 steps).
        plain: force plain lines (True) or the bar (False); None decides by the terminal.
    """

    def __init__(self, every_n_steps: Optional[int] = None, plain: Optional[bool] = None):
        super().__init__()
        self.every_n_steps, self.plain = every_n_steps, plain
        self._enabled, self._bar, self._start, self._first_step = True, None, 0.0, 0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.write(sep.join(map(str, args)), file=sys.stderr)
        else:
            print(*args, sep=sep, **kwargs)

    def enable(self) -> None:
        self._enabled = True

    def _total(self) -> Optional[int]:
        max_steps = self.trainer.max_steps
        if max_steps is not None and max_steps > 0:
            return max_steps
        batches = self.trainer.num_training_batches
        epochs = self.trainer.max_epochs
        return int(batches * epochs) if math.isfinite(batches) and epochs and epochs > 0 else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step
        if self.plain is None:
            self.plain = not _is_terminal()
        if not self._enabled or self.plain or not trainer.is_global_zero:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self._total(), initial=trainer.global_step, desc="step", dynamic_ncols=True,
                         file=sys.stderr, smoothing=0.1)

    def _values(self, trainer: L.Trainer) -> dict[str, str]:
        metrics = self.get_metrics(trainer, trainer.lightning_module)
        out = {}
        key = _loss_key(metrics)
        if key is not None:
            out["loss"] = f"{float(metrics[key]):.3f}"
        if "perf/tokens_per_s" in metrics:
            out["tokens/s"] = f"{float(metrics['perf/tokens_per_s']):,.0f}"
        return out

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {k: v for k, v in trainer.progress_bar_metrics.items() if k != "v_num"}  # v_num: not a metric

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(self._values(trainer), refresh=False)
            return
        total = self._total()
        every = self.every_n_steps or max(10, (total or 200) // 20)
        if step % every and step != total:
            return
        done = step - self._first_step
        elapsed = time.perf_counter() - self._start
        parts = [f"step {step}/{total}" if total else f"step {step}"]
        parts += [f"{k} {v}" for k, v in self._values(trainer).items()]
        if total and done > 0:
            parts.append(f"ETA {_duration(elapsed / done * (total - step))}")
        print("  ".join(parts), flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)


class LastValidation(L.Callback):
    """Remembers the step of the fit's last validation (the CLI validates the final weights when it is older)."""

    def __init__(self) -> None:
        self.step: Optional[int] = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.step = trainer.global_step


class ModelTable(ModelSummary):
    """Lightning's model summary without its FLOPs column, which reads 0 for every zoo task (Lightning
    counts it only from an `example_input_array`); the training FLOPs are what `Throughput` logs."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int = 0,
                  **kwargs: Any) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
        widths = [max(len(name), *(len(v) for v in values)) for name, values in columns]
        lines = ["  ".join(name.ljust(w) for (name, _), w in zip(columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in zip(*(vals for _, vals in columns))]
        lines.append(f"parameters: {get_human_readable_count(int(total_parameters))} "
                     f"({get_human_readable_count(int(trainable_parameters))} trainable), "
                     f"{get_formatted_model_size(model_size)} MB")
        if total_flops:
            lines.append(f"forward FLOPs: {get_human_readable_count(int(total_flops))}")
        rank_zero_info("\n".join(lines))


# --------------------------------------------------------------------------- after the run
def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_losses(metrics_csv: Path, out: Path) -> Optional[Path]:
    """Train and validation loss against the step as a PNG; None without matplotlib or loss rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_metrics(metrics_csv) if metrics_csv.is_file() else []
    series = {}
    for key in sorted({k for r in rows for k in r if k.endswith("loss") and "/" in k}):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if points:
            series[key] = sorted(points)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, points in series.items():
        ax.plot(*zip(*points), label=key, marker="o" if len(points) < 30 else None)
    ax.set(xlabel="step", ylabel="loss (nats per token)", title=metrics_csv.parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _fmt(value: Any) -> str:
    v = float(value)
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"


def summary_lines(trainer: L.Trainer, train_metrics: dict, config_file: Optional[str], can_generate: bool,
                  can_export: bool, png: Optional[Path]) -> list[str]:
    """The closing report of a fit: where everything went and what to run next."""
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") or None
    last = getattr(cb, "last_model_path", "") or None
    metrics = {k: v for k, v in trainer.callback_metrics.items() if not k.startswith("perf/")}
    train = {k: v for k, v in train_metrics.items() if not k.startswith("perf/")}
    val = {k: v for k, v in metrics.items() if k.startswith("val")}
    lines = [f"finished at step {trainer.global_step}" + (f" of {trainer.max_steps}" if trainer.max_steps > 0 else "")]
    lines.append(f"  best checkpoint:  {best or '(none: no monitored metric was saved)'}")
    lines.append(f"  last checkpoint:  {last or '(none)'}")
    if train:
        lines.append("  train: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(train.items())))
    if val:
        lines.append("  val:   " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(val.items())))
    if trainer.logger is not None:
        log_dir = trainer.logger.log_dir  # not trainer.log_dir: a collective (this runs on rank 0 only)
        lines.append(f"  logs:  {log_dir}" + ("  (tensorboard --logdir " + str(Path(log_dir).parent)
                                                       + ")" if len(trainer.loggers) > 1 else ""))
    if png is not None:
        lines.append(f"  loss curves: {png}")
    ckpt = best or last
    if ckpt:
        lines.append("next:")
        if can_generate:
            lines.append(f"  zoo generate --model {ckpt} --prompt \"The \"")
        if config_file:
            lines.append(f"  zoo validate -c {config_file} --ckpt_path {ckpt}")
        if can_export:
            lines.append(f"  zoo export --model {ckpt} --out {Path(ckpt).parent.parent / 'hf'} --format hf")
    return lines
