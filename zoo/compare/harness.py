"""The pre-train → fine-tune harness behind `zoo compare` and `benchmarks/families.py`: a family's YAML
config through the same `ZooCLI` as `zoo fit`, with the benchmarks' common overrides (budget, device,
output folder), fitted, validated and checkpointed.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import lightning
import torch

from zoo.families import Family
from zoo.lightning_cli import ZooCLI

ROOT = Path(__file__).resolve().parents[2]  # the checkout: configs/ and benchmarks/results/
MODEL = "--model.init_args.model.init_args.config."


def classify_config(family: Family) -> str:
    """The family's topic-classification fine-tuning config."""
    return f"configs/{family.name}/classify.yaml"


def build(config: str, run_dir: Path, extra: list[str], device: Optional[torch.device] = None,
          seed: Optional[int] = None, log_every: Optional[int] = None, val_batches: Optional[int] = None) -> ZooCLI:
    """The task, data module and trainer of `config`, validated only when the harness asks, without
    progress bars or checkpoints of its own, plus `extra` overrides. A `device` sets accelerator and
    precision (bf16-mixed on CUDA); `seed`, `log_every` and `val_batches` override the config's."""
    args = ["-c", str(ROOT / config),
            "--trainer.val_check_interval", "null", "--trainer.check_val_every_n_epoch", "100000",  # we validate
            "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks", "[]",
            "--trainer.enable_checkpointing", "false",  # one checkpoint, saved by `checkpoint`
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir)]
    if device is not None:
        cuda = device.type == "cuda"
        args += ["--trainer.accelerator", "gpu" if cuda else "cpu", "--trainer.devices", "1",
                 "--trainer.precision", "bf16-mixed" if cuda else "32-true"]
    for option, value in (("--seed_everything", seed), ("--trainer.log_every_n_steps", log_every),
                          ("--trainer.limit_val_batches", val_batches)):
        if value:
            args += [option, str(value)]
    with warnings.catch_warnings():  # a calling script's own options are in sys.argv, which LightningCLI warns about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return ZooCLI(args=args + extra, run=False)


def budget_args(seconds: float, steps: Optional[int] = None) -> list[str]:
    """A step budget, or a wall-clock one (constant learning rate after warm-up: no known horizon)."""
    if steps is not None:
        return ["--trainer.max_steps", str(steps)]
    hms = time.strftime("%H:%M:%S", time.gmtime(max(1, round(seconds))))
    return ["--trainer.max_steps", str(10**9), "--trainer.max_time", f"00:{hms}",
            "--model.init_args.schedule", "constant"]


def finetune_args(checkpoint: Optional[str]) -> list[str]:
    """Start fine-tuning from a pre-training checkpoint's weights and tokenizer (none: from scratch)."""
    return ["--model.init_args.init_from", checkpoint, "--data.init_args.tokenizer", checkpoint] if checkpoint else []


def fit(cli: ZooCLI) -> tuple[int, float]:
    """Train within the budget; (optimizer steps, wall-clock seconds of the fit)."""
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer.global_step, round(time.perf_counter() - start, 1)


def validate(cli: ZooCLI, keys: Optional[tuple[str, ...]] = None) -> dict[str, float]:
    """The `val/*` scores (only `keys`, where given), without their prefix."""
    scores = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    names = keys if keys is not None else [k for k in scores if k.startswith("val/")]
    return {k.split("/", 1)[1]: round(float(scores[k]), 4) for k in names if k in scores}


def checkpoint(cli: ZooCLI, path: Path) -> str:
    """The full checkpoint (weights, tokenizer, config) a fine-tuning run starts from."""
    cli.trainer.save_checkpoint(str(path), weights_only=False)  # the full checkpoint, said explicitly
    return str(path)


def classification_data(cli: ZooCLI) -> dict:
    dm = cli.datamodule
    return {"labels": dm.label_names, "train_examples": len(dm.examples("train")),
            "val_examples": len(dm.examples("val"))}


def environment(device: torch.device) -> dict:
    """Device, dtype, threads, library versions and the date, for a results file."""
    cuda = device.type == "cuda"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": torch.cuda.get_device_name(device) if cuda
        else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "device_type": device.type, "dtype": "bf16-mixed" if cuda else "float32",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": lightning.__version__,
        "triton": triton_version, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
