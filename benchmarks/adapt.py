"""LoRA against full fine-tuning on the embedded topic-classification task (configs/<family>/classify.yaml).

For each family: pre-train a base with the family's pre-training config (`--pretrain-steps`), then
fine-tune it twice from the same base, with the same data, steps and batch: every parameter (the
config's optimizer), and LoRA (`zoo.adapters`, the task's `lora:` option: adapters on `--targets`, rank
`--rank`, alpha 2·rank, the classifier head and `--trainable` modules trained; `--lora-lr`). Every run
is a real `zoo fit` in its own process (so peak memory is that run's), and reports

- trainable parameters (and their share of all the task's parameters),
- checkpoint size: `last.ckpt` (LoRA: `save_adapters_only`, adapters and head only),
- peak memory: the process's max RSS on CPU, `torch.cuda.max_memory_allocated` on GPU,
- step time: median of the training steps after 5 warm-up steps,
- final validation accuracy (the task's `val/acc` after the last step).

Writes `benchmarks/results/adapt-lora-<device><--tag>.json` and `.md`. The instruction-tuning (SFT) half of
issue 16 can call `pretrain`, `fit` and `measure_args` from here (see the README).

    python benchmarks/adapt.py [--families bert gpt t5 bart] [--pretrain-steps 1000] [--steps 300]

The defaults are the README's recipe (1000-step bases, 300 fine-tuning steps, r=8 on q/k/v/o, lr 5e-3).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's `kernels` package, not benchmarks/kernel_bench.py
RESULTS = ROOT / "benchmarks" / "results"
PRETRAIN = {"bert": "configs/bert/tiny.yaml", "gpt": "configs/gpt/nano.yaml", "t5": "configs/t5/tiny.yaml",
            "bart": "configs/bart/tiny.yaml"}
# the classify configs' models, made to match their pre-training configs' (init_from needs the same shapes)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class Measure(Callback):
    """Records what the benchmark reports, from inside the run; rank 0 writes it as JSON to `path`."""

    def __init__(self, path: str, warmup: int = 5):
        self.path, self.warmup = path, warmup
        self.times: list[float] = []
        self.start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.start)

    def on_train_end(self, trainer, pl_module) -> None:
        import resource

        params = list(pl_module.parameters())
        acc = trainer.callback_metrics.get("val/acc")
        peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        timed = self.times[self.warmup:] or self.times
        out = {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params),
               "step_s": statistics.median(timed), "steps": len(self.times), "peak_bytes": int(peak),
               "peak_kind": "cuda max_memory_allocated" if torch.cuda.is_available() else "process max RSS",
               "val_acc": float(acc) if acc is not None else None}
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(out))


def fit(args: list[str], log: Path) -> None:
    """One `zoo fit ARGS` in its own Python process (cwd: the repository root)."""
    code = "import sys; sys.path.insert(0, '.'); from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-c", code, "fit", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"zoo fit failed ({done.returncode}); see {log}")


def measure_args(path: Path) -> list[str]:
    """`zoo fit` arguments adding the `Measure` callback that writes `path`."""
    return ["--trainer.callbacks+=benchmarks.adapt.Measure", f"--trainer.callbacks.path={path}"]


def pretrain(family: str, steps: int, work: Path, cache: str, accelerator: str) -> Path:
    """The base checkpoint: the family's pre-training config for `steps` steps (reused when present)."""
    root = work / f"{family}-base-{steps}"
    found = sorted(root.rglob("last.ckpt"))
    if found:
        return found[0]
    root.mkdir(parents=True, exist_ok=True)
    fit(["-c", PRETRAIN[family], "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
         "--trainer.accelerator", accelerator, "--data.init_args.cache_dir", cache,
         "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root), *QUIET],
        root / "fit.log")
    return sorted(root.rglob("last.ckpt"))[0]


def model_args(base: Path) -> list[str]:
    """--model.init_args.model... overrides giving the classify config the base's architecture."""
    from zoo.checkpoint import read_checkpoint

    meta = read_checkpoint(base)["zoo"]
    out = ["--model.init_args.model.class_path", f"zoo.models.{_model_class(meta['family'])}"]
    for key, value in meta["config"].items():
        if isinstance(value, (int, float, str, bool)) and key not in ("attn_impl", "norm_impl"):
            out += [f"--model.init_args.model.init_args.config.{key}", json.dumps(value) if isinstance(value, bool) else str(value)]
    return out


def _model_class(family: str) -> str:
    from zoo.families import get

    return get(family).model.__name__


def finetune(family: str, base: Path, mode: str, steps: int, work: Path, cache: str, accelerator: str,
             lora: dict) -> dict:
    """Fine-tune `base` on the topic task, fully (`mode="full"`) or with LoRA; the measured row."""
    root = work / f"{family}-{mode}-{steps}"
    root.mkdir(parents=True, exist_ok=True)
    result = root / "measure.json"
    args = ["-c", f"configs/{family}/classify.yaml", *model_args(base), "--model.init_args.init_from", str(base),
            "--data.init_args.tokenizer", str(base), "--data.init_args.cache_dir", cache,
            "--trainer.max_steps", str(steps), "--trainer.accelerator", accelerator,
            "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", str(steps),
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
            *QUIET, *measure_args(result)]
    if mode == "lora":
        args += ["--model.init_args.optimizer.init_args.lr", str(lora["lr"]),
                 "--model.init_args.lora.r", str(lora["r"]), "--model.init_args.lora.alpha", str(2 * lora["r"]),
                 "--model.init_args.lora.targets", json.dumps(lora["targets"]),
                 "--model.init_args.lora.trainable", json.dumps(lora["trainable"].get(family, [])),
                 "--model.init_args.lora.save_adapters_only", "true"]
    t0 = time.perf_counter()
    fit(args, root / "fit.log")
    row = json.loads(result.read_text())
    ckpt = sorted(root.rglob("last.ckpt"))[0]
    return {"family": family, "mode": mode, **row, "trainable_pct": 100 * row["trainable"] / row["total"],
            "checkpoint_bytes": ckpt.stat().st_size, "wall_s": time.perf_counter() - t0}


def lora_vs_full(families: list[str], pretrain_steps: int, steps: int, work: Path, accelerator: str, lora: dict) -> list[dict]:
    cache = str(work / "cache")
    rows = []
    for family in families:
        base = pretrain(family, pretrain_steps, work, cache, accelerator)
        for mode in ("full", "lora"):
            rows.append(finetune(family, base, mode, steps, work, cache, accelerator, lora))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def environment(accelerator: str) -> dict:
    import lightning
    import peft

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name() if accelerator == "gpu" else f"cpu {platform.machine()}",
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "torch": torch.__version__,
            "lightning": lightning.__version__, "peft": peft.__version__, "python": platform.python_version(),
            "dtype": "float32"}


def table(rows: list[dict]) -> str:
    lines = ["| family | mode | trainable | share | checkpoint | peak memory | step time | val acc |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        acc = "n/a" if r["val_acc"] is None else f"{r['val_acc']:.3f}"
        lines.append(f"| {r['family']} | {r['mode']} | {r['trainable']:,} | {r['trainable_pct']:.2f}% | "
                     f"{r['checkpoint_bytes'] / 2**20:.2f} MiB | {r['peak_bytes'] / 2**20:.0f} MiB | "
                     f"{1000 * r['step_s']:.0f} ms | {acc} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["bert", "gpt", "t5", "bart"], choices=sorted(PRETRAIN))
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps, the same for both modes")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    p.add_argument("--lora-lr", type=float, default=5e-3)
    p.add_argument("--accelerator", default="gpu" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", default="runs/adapt")
    p.add_argument("--tag", default="", help="suffix of the results files (adapt-lora-<device><tag>.json)")
    args = p.parse_args()
    lora = {"r": args.rank, "targets": args.targets, "lr": args.lora_lr,
            "trainable": {"bert": ["pooler"]}}  # BERT's head reads the pooler, which pre-training (MLM) never trained
    env = {**environment(args.accelerator), "pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps,
           "lora": lora}
    rows = lora_vs_full(args.families, args.pretrain_steps, args.steps, Path(args.work), args.accelerator, lora)
    env["load_average_end"] = os.getloadavg()
    name = f"adapt-lora-{'gpu' if args.accelerator == 'gpu' else 'cpu'}{args.tag}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    md = (f"LoRA vs full fine-tuning, topic classification ({env['device']}, {env['date']}, torch {env['torch']}, "
          f"load average {env['load_average'][0]:.1f} → {env['load_average_end'][0]:.1f} on {env['cpus']} CPUs; "
          f"base pre-trained {args.pretrain_steps} steps, fine-tuned {args.steps} steps; LoRA r={args.rank} on "
          f"{', '.join(args.targets)}, lr {args.lora_lr})\n\n{table(rows)}\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
