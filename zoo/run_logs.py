"""Where a run logs: CSV and TensorBoard side by side in one `version_N` folder, kept by a resumed run.

- `with_tensorboard`: a CSVLogger gets a TensorBoardLogger writing into the same folder (same save
  dir, name and version), so `tensorboard --logdir <save_dir>/<name>` shows the curves and the
  text samples; skipped with one note when `tensorboard` is not installed.
- `resume_in_version`: `--ckpt_path` pointing into `<save_dir>/<name>/version_N/checkpoints/` makes
  the loggers write to `version_N` again. Its `metrics.csv` keeps the rows logged before the
  checkpoint's step (Lightning's CSV writer would delete the file) and the resumed run appends;
  TensorBoard drops its events from that step on (`purge_step`), which the resumed run logs anew.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info


def with_tensorboard(logger: Any) -> Any:
    """[csv, tensorboard] for a single CSVLogger (the configs' default); anything else unchanged."""
    if not isinstance(logger, CSVLogger):
        return logger
    try:
        import tensorboard  # noqa: F401  (Lightning's TensorBoardLogger would fall back to tensorboardX or fail)
    except ImportError:
        rank_zero_info("TensorBoard logging off: `pip install tensorboard` to get it beside metrics.csv")
        return logger
    tb = TensorBoardLogger(save_dir=logger.save_dir, name=logger.name, default_hp_metric=False)
    return [logger, tb]


def align_versions(loggers: list[Logger]) -> None:
    """TensorBoard writes into the CSV logger's version folder (call before either creates it)."""
    csv_logger = next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is None:
        return
    version = csv_logger.version
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and Path(logger.root_dir) == Path(csv_logger.root_dir):
            logger._version = version if isinstance(version, str) else f"version_{version}"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv keeps its rows before `before_step`."""

    def __init__(self, log_dir: str, before_step: int) -> None:
        self._before_step = before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") not in (None, "") and int(float(r["step"])) < self._before_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(header)


def checkpoint_version(ckpt: str, logger: Logger) -> Optional[int | str]:
    """N when `ckpt` lies in `<logger root>/version_N/checkpoints/` (any version name), else None."""
    path = Path(ckpt).resolve()
    root = getattr(logger, "root_dir", None)
    if root is None or len(path.parents) < 3 or path.parent.name != "checkpoints":
        return None
    folder = path.parent.parent
    if folder.parent != Path(root).resolve():
        return None
    name = folder.name
    return int(name.removeprefix("version_")) if name.startswith("version_") and name[8:].isdigit() else name


def resume_in_version(loggers: list[Logger], ckpt: str, step: int) -> Optional[str]:
    """Point every logger at the checkpoint's version folder; returns that folder (None: not ours)."""
    csv_logger = next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)
    version = checkpoint_version(ckpt, csv_logger) if csv_logger is not None else None
    if version is None:
        return None
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            logger._version = version
            logger._experiment = _AppendingWriter(logger.log_dir, before_step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger._version = version if isinstance(version, str) else f"version_{version}"
            logger._kwargs["purge_step"] = step
    return csv_logger.log_dir
