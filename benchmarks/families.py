"""BERT, T5 and BART side by side on the CPU: each family's tiny pre-training for a fixed wall-clock
budget, then fine-tuning on the embedded topic-classification task, from the pre-trained weights
and from scratch.

Pre-training (`configs/<family>/tiny.yaml`, the objectives of Devlin et al. 2019, Raffel et al.
2020 and Lewis et al. 2020): validation loss at step 0 and after the budget, steps, wall-clock
seconds, and the objective's own metrics (masked-token accuracy; BLEU / ROUGE-L of greedy and beam
decodes). The losses are per target token of each family's own objective and tokenizer: compare a
family's before with its after, not one family with another.

Fine-tuning (`configs/<family>/classify.yaml`: which Python documentation topic a paragraph comes
from): accuracy and macro-F1 on the validation paragraphs, at step 0 and after the budget.

Everything runs through the same `ZooCLI` as `zoo fit`, the YAML configs plus a few overrides
(budget, output folder). Runs and checkpoints go to a temporary folder.

    python benchmarks/families.py                      # the README figures (about 12 minutes)
    python benchmarks/families.py --pretrain-seconds 20 --finetune-seconds 10 --families bert

Writes benchmarks/results/families-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # run as a script: import the repository's packages, not benchmarks/*
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import lightning  # noqa: E402
import torch  # noqa: E402

from zoo.lightning_cli import ZooCLI  # noqa: E402

ROOT = _HERE.parent
FAMILIES = ("bert", "t5", "bart")
OBJECTIVES = {"bert": "masked LM (15%, whole-word)", "t5": "span corruption (15%, mean span 3)",
              "bart": "sentence permutation + text infilling (30%, Poisson λ=3)"}
PRETRAIN_KEYS = ("val/loss", "val/ppl", "val/acc", "val/bleu_greedy", "val/bleu_beam",
                 "val/rougeL_greedy", "val/rougeL_beam")
FINETUNE_KEYS = ("val/loss", "val/acc", "val/macro_f1")


def build(config: str, root: Path, seconds: float, extra: list[str]) -> ZooCLI:
    """The task, data module and trainer of ``config``, stopped by a wall-clock budget."""
    budget = time.strftime("00:%H:%M:%S", time.gmtime(max(1, round(seconds))))
    args = [
        "-c", str(ROOT / config),
        "--trainer.max_steps", "1000000",
        "--trainer.max_time", budget,
        "--trainer.val_check_interval", "null",
        "--trainer.check_val_every_n_epoch", "100000",  # validate only before and after, here
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root),
        *extra,
    ]
    return ZooCLI(args=args, run=False)


def validate(cli: ZooCLI, keys: tuple[str, ...]) -> dict[str, float]:
    scores = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {k.split("/")[1]: round(float(scores[k]), 4) for k in keys if k in scores}


def fit(cli: ZooCLI) -> tuple[int, float]:
    """Train within the budget; (optimizer steps, wall-clock seconds of the fit)."""
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer.global_step, round(time.perf_counter() - start, 1)


def pretrain(family: str, root: Path, seconds: float) -> tuple[dict, str]:
    """Pre-train the tiny config; its results and the checkpoint written at the end."""
    cli = build(f"configs/{family}/tiny.yaml", root / f"{family}-tiny", seconds, [])
    model = cli.model.model
    before = validate(cli, PRETRAIN_KEYS)
    steps, wall = fit(cli)
    after = validate(cli, PRETRAIN_KEYS)
    ckpt = str(root / f"{family}-tiny.ckpt")
    cli.trainer.save_checkpoint(ckpt, weights_only=False)  # the full checkpoint, said explicitly
    dm = cli.datamodule
    result = {
        "config": f"configs/{family}/tiny.yaml", "objective": OBJECTIVES[family],
        "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": dm.model_vocab_size,
        "batch_size": dm.batch_size, "block_size": dm.block_size, "budget_s": seconds,
        "steps": steps, "wall_s": wall, "step0": before, "after": after,
    }
    return result, ckpt


def finetune(family: str, root: Path, seconds: float, ckpt: str | None) -> dict:
    """Fine-tune the classify config, from ``ckpt`` (its weights and tokenizer) or from scratch."""
    name = f"{family}-classify-{'pretrained' if ckpt else 'scratch'}"
    extra = ["--model.init_args.init_from", ckpt, "--data.init_args.tokenizer", ckpt] if ckpt else []
    cli = build(f"configs/{family}/classify.yaml", root / name, seconds, extra)
    before = validate(cli, FINETUNE_KEYS)
    steps, wall = fit(cli)
    after = validate(cli, FINETUNE_KEYS)
    dm = cli.datamodule
    return {
        "config": f"configs/{family}/classify.yaml", "init": "pre-trained" if ckpt else "scratch",
        "labels": dm.label_names, "train_examples": len(dm.examples("train")),
        "val_examples": len(dm.examples("val")), "budget_s": seconds, "steps": steps, "wall_s": wall,
        "step0": before, "after": after,
    }


def environment(threads: int) -> dict:
    return {
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "dtype": "float32", "torch": torch.__version__, "lightning": lightning.__version__,
        "python": platform.python_version(), "threads": threads,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--pretrain-seconds", type=float, default=120.0)
    parser.add_argument("--finetune-seconds", type=float, default=45.0)
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch fine-tuning baseline")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is fastest for tiny models on a shared 2-core machine")
    parser.add_argument("--out", default=str(_HERE / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"environment": environment(args.threads), "load_before": [round(x, 2) for x in os.getloadavg()],
               "families": {}}
    with tempfile.TemporaryDirectory(prefix="zoo-families-") as tmp:
        root = Path(tmp)
        for family in args.families:
            pre, ckpt = pretrain(family, root, args.pretrain_seconds)
            runs = [finetune(family, root, args.finetune_seconds, ckpt)]
            if not args.no_scratch:
                runs.append(finetune(family, root, args.finetune_seconds, None))
            results["families"][family] = {"pretrain": pre, "finetune": runs}
            print(json.dumps({family: results["families"][family]}, indent=1), flush=True)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "families-cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "families-cpu.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
