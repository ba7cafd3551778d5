"""Instruction tuning from the demo checkpoint: held-out response loss before and after `configs/gpt/sft.yaml`.

    python benchmarks/sft.py --init runs/gpt-nano/logs/version_0/checkpoints/last.ckpt [--steps 64]

Scores the starting model (its vocabulary grown by the chat template's tokens, as `init_from`
does) and the fine-tuned one on the same held-out packed blocks (topics never trained on), as the
token-weighted mean cross-entropy over response tokens; the fine-tuning is a real `zoo fit` of
the config. Writes benchmarks/results/sft.json and .md with machine, load, versions and shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from zoo.checkpoint import model_from_checkpoint  # noqa: E402
from zoo.data.instructions import InstructionDataModule  # noqa: E402
from zoo.models import GPT  # noqa: E402
from zoo.tasks.instruction import load_pretrained_growing_vocab  # noqa: E402


@torch.no_grad()
def response_loss(model, blocks: list[dict]) -> tuple[float, int]:
    """Mean cross-entropy (nats) over the response tokens of the blocks, and how many there were."""
    model.eval()
    total, count = 0.0, 0
    for b in blocks:
        logits = model(b["input_ids"][None], position_ids=b["position_ids"][None], segment_ids=b["segment_ids"][None])
        labels = b["labels"]
        total += float(torch.nn.functional.cross_entropy(logits[0], labels, ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
    return total / count, count


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, help="the demo checkpoint (runs/gpt-nano/.../last.ckpt)")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--config", default=str(ROOT / "configs" / "gpt" / "sft.yaml"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sft"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dm = InstructionDataModule(sources=["pydoc"], vocab_size=512, val_fraction=0.15, block_size=128)
    val = dm.blocks("val")
    base, _ = model_from_checkpoint(args.init)
    start = GPT(replace(base.config, vocab_size=dm.model_vocab_size, dropout=0.0))
    load_pretrained_growing_vocab(start, args.init)
    before, n_tokens = response_loss(start, val)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zoo.cli", "fit", "-c", args.config, "--model.init_args.init_from", args.init,
                        "--trainer.max_steps", str(args.steps), "--trainer.default_root_dir", tmp,
                        "--trainer.logger.init_args.save_dir", tmp], check=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        load.append(os.getloadavg()[0])
        tuned, _ = model_from_checkpoint(str(next(Path(tmp).rglob("last.ckpt"))))
        after, _ = response_loss(tuned, val)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "init": args.init, "config": args.config,
        "steps": args.steps, "batch_size": dm.batch_size, "block_size": dm.block_size,
        "train_blocks": len(dm.blocks("train")), "train_records": len(dm.records("train")),
        "val_blocks": len(val), "val_records": len(dm.records("val")), "val_response_tokens": n_tokens,
        "model": {k: v for k, v in vars(start.config).items() if k in ("d_model", "n_layer", "n_head", "max_seq_len",
                                                                       "vocab_size")},
        "response_loss_before": round(before, 4), "response_loss_after": round(after, 4),
        "fit_wall_s": round(wall, 1), "device": "cpu", "cpus": os.cpu_count(), "machine": platform.platform(),
        "load_avg_1min_before_after": [round(x, 2) for x in load], "torch": torch.__version__,
        "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Instruction tuning (configs/gpt/sft.yaml) from the demo checkpoint", "",
          "| held-out response loss (nats/token) | value |", "| --- | --- |",
          f"| starting model (init_from, vocabulary grown) | {before:.3f} |",
          f"| after {args.steps} steps of full fine-tuning | {after:.3f} |", "",
          f"{n_tokens} response tokens in {len(val)} packed blocks of {dm.block_size} ({result['val_records']} held-out "
          f"records, topics not trained on); {result['date']}, {platform.platform()}, {os.cpu_count()} CPUs, "
          f"1-min load {load[0]:.1f} → {load[1]:.1f}, torch {torch.__version__}, fit {wall:.0f} s."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
