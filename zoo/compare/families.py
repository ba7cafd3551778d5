"""The runs behind `benchmarks/families.py`: each encoder family's tiny pre-training for a wall-clock
budget, validated before and after, then topic-classification fine-tuning from the pre-trained
weights and from scratch, through the harness (`zoo.compare.harness`), and the markdown table."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import torch

from zoo import families as registry
from zoo.compare import harness

PRETRAIN_KEYS = ("val/loss", "val/ppl", "val/acc", "val/bleu_greedy", "val/bleu_beam",
                 "val/rougeL_greedy", "val/rougeL_beam")
FINETUNE_KEYS = ("val/loss", "val/acc", "val/macro_f1")
CPU = torch.device("cpu")


def pretrain(family: registry.Family, root: Path, seconds: float) -> tuple[dict, str]:
    """Pre-train the family's CPU-sized config; its results and the checkpoint written at the end."""
    cli = harness.build(family.pretrain_config, root / f"{family.name}-pretrain", harness.budget_args(seconds),
                        device=CPU)
    before = harness.validate(cli, PRETRAIN_KEYS)
    steps, wall = harness.fit(cli)
    after = harness.validate(cli, PRETRAIN_KEYS)
    ckpt = harness.checkpoint(cli, root / f"{family.name}-pretrain.ckpt")
    dm = cli.datamodule
    result = {
        "config": family.pretrain_config, "objective": family.objective,
        "parameters": sum(p.numel() for p in cli.model.model.parameters()), "vocab_size": dm.model_vocab_size,
        "batch_size": dm.batch_size, "block_size": dm.block_size, "budget_s": seconds,
        "steps": steps, "wall_s": wall, "step0": before, "after": after,
    }
    return result, ckpt


def finetune(family: registry.Family, root: Path, seconds: float, ckpt: Optional[str]) -> dict:
    """Fine-tune the classify config, from `ckpt` (its weights and tokenizer) or from scratch."""
    config = harness.classify_config(family)
    name = f"{family.name}-classify-{'pretrained' if ckpt else 'scratch'}"
    cli = harness.build(config, root / name, harness.finetune_args(ckpt) + harness.budget_args(seconds), device=CPU)
    before = harness.validate(cli, FINETUNE_KEYS)
    steps, wall = harness.fit(cli)
    after = harness.validate(cli, FINETUNE_KEYS)
    return {"config": config, "init": "pre-trained" if ckpt else "scratch", **harness.classification_data(cli),
            "budget_s": seconds, "steps": steps, "wall_s": wall, "step0": before, "after": after}


def run(families: list[str], pretrain_seconds: float, finetune_seconds: float, scratch: bool = True,
        progress=print) -> dict:
    """Pre-train and fine-tune each family on the CPU; the results (`markdown` prints them)."""
    results = {"environment": harness.environment(CPU), "load_before": harness.load_average(), "families": {}}
    with tempfile.TemporaryDirectory(prefix="zoo-families-") as tmp:
        root = Path(tmp)
        for name in families:
            family = registry.get(name)
            pre, ckpt = pretrain(family, root, pretrain_seconds)
            runs = [finetune(family, root, finetune_seconds, ckpt)]
            if scratch:
                runs.append(finetune(family, root, finetune_seconds, None))
            results["families"][name] = {"pretrain": pre, "finetune": runs}
            progress({name: results["families"][name]})
    results["load_after"] = harness.load_average()
    return results


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Families on the CPU: tiny pre-training, then topic classification",
        "",
        f"{env['device']}, {env['threads']} torch thread(s), torch {env['torch']}, lightning {env['lightning']}, "
        f"{env['date']}. Load average before/after: {results['load_before']} / {results['load_after']} "
        "(a shared machine: wall-clock budgets buy fewer steps under load).",
        "",
        "Validation loss is per target token of each family's own objective and tokenizer: compare "
        "before with after within a row, not rows with each other.",
        "",
        "| family | objective | params | steps | wall s | val loss step 0 | val loss after "
        "| objective metrics after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for family, r in results["families"].items():
        p = r["pretrain"]
        extra = ", ".join(f"{k} {v:.3f}" for k, v in p["after"].items() if k not in ("loss", "ppl"))
        lines.append(f"| {family} | {p['objective']} | {p['parameters'] / 1e6:.2f}M | {p['steps']} | {p['wall_s']} | "
                     f"{p['step0']['loss']:.3f} | {p['after']['loss']:.3f} | {extra} |")
    lines += ["", "Topic classification (validation paragraphs; step-0 accuracy is the untrained classifier):", "",
              "| family | init | steps | wall s | acc step 0 | acc | macro-F1 |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for family, r in results["families"].items():
        for f in r["finetune"]:
            lines.append(f"| {family} | {f['init']} | {f['steps']} | {f['wall_s']} | {f['step0']['acc']:.3f} | "
                         f"{f['after']['acc']:.3f} | {f['after']['macro_f1']:.3f} |")
    first = next(iter(results["families"].values()))["finetune"][0]
    lines += ["", f"Labels ({len(first['labels'])}): {', '.join(first['labels'])}; "
              f"{first['train_examples']} train / {first['val_examples']} validation paragraphs.", ""]
    return "\n".join(lines)
