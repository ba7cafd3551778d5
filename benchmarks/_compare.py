"""The runs behind `benchmarks/architectures.py`: each family's pre-training, fine-tuning and backend
timing, through the same `ZooCLI` as `zoo fit` (its YAML config plus overrides for size, budget,
device and output folder), and the results they add up to."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import tempfile
import time
import warnings
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning
import torch

from benchmarks import _report, _runs
from zoo.errors import ZooError
from zoo.lightning_cli import ZooCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"gpt": "configs/gpt/nano.yaml", "bert": "configs/bert/tiny.yaml", "t5": "configs/t5/tiny.yaml",
           "bart": "configs/bart/tiny.yaml", "clip": "configs/clip/tiny.yaml"}
OBJECTIVES = {"gpt": "causal LM", "bert": "masked LM (15%, whole-word)", "t5": "span corruption (15%, span 3)",
              "bart": "text infilling + sentence permutation (30%)", "clip": "contrastive (InfoNCE), digits"}
MODEL = "--model.init_args.model.init_args.config."
MATCH_TOLERANCE = 0.05  # non-embedding parameter counts within 5% of their mean count as matched


def plan_from(settings: dict) -> SimpleNamespace:
    """The validated settings, with the device resolved; bad values end in a one-line ZooError."""
    p = SimpleNamespace(**settings)
    if not p.families and not p.clip:
        raise ZooError("nothing to compare: name some --families or set --clip true")
    if (p.budget_flops if p.budget_flops is not None else p.budget_seconds) <= 0:
        raise ZooError("the pre-training budget must be positive: set --budget_seconds or --budget_flops above 0")
    if (p.finetune_steps if p.finetune_steps is not None else p.finetune_seconds) <= 0:
        raise ZooError("the fine-tuning budget must be positive: set --finetune_seconds or --finetune_steps above 0")
    for name, value in (("block_size", p.block_size), ("batch_size", p.batch_size), ("log_every", p.log_every),
                        ("timing_steps", p.timing_steps), ("vocab_size", p.vocab_size)):
        if value < 1:
            raise ZooError(f"--{name} must be at least 1, got {value}")
    p.sizes = {family: settings[family] for family in p.families}
    for family, size in p.sizes.items():
        if size.d_model % size.n_head:
            raise ZooError(f"{family}: d_model {size.d_model} is not a multiple of n_head {size.n_head}; "
                           f"change --{family}.n_head or --{family}.d_model")
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ZooError("--device cuda, but torch sees no CUDA device; use --device cpu or auto")
    p.device = torch.device("cuda" if p.device == "cuda" or p.device == "auto" and torch.cuda.is_available() else "cpu")
    p.out = Path(p.out_dir) if p.out_dir else ROOT / "benchmarks" / "results"
    return p


def run(settings: dict) -> dict:
    """Everything `compare` promises: train, fine-tune and time each model, then write the results."""
    plan = plan_from(settings)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    peak, peak_kind = _runs.peak_flops(plan.device)
    results = {"benchmark": "architectures", "environment": environment(plan), "settings": jsonable(settings),
               "peak_flops": peak, "peak_kind": peak_kind, "load_before": load_average(), "families": {}, "clip": None}
    with tempfile.TemporaryDirectory(prefix="zoo-compare-") as tmp:
        root = Path(tmp)
        for family in plan.families:
            pre, ckpt = pretrain(family, plan, root, peak)
            results["families"][family] = {"pretrain": pre, "finetune": finetune(family, plan, root, ckpt)}
            progress(family, results["families"][family])
        if plan.clip:
            results["clip"], _ = pretrain("clip", plan, root, peak)
            progress("clip", {"pretrain": results["clip"]})
    results["load_after"] = load_average()
    results["params_matched"] = check_matched(results)
    paths = _report.write(results, plan.out)
    print(_report.markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return results


# ---------------------------------------------------------------------------- the runs
def build(config: str, run_dir: Path, plan: SimpleNamespace, extra: list[str]) -> ZooCLI:
    """The task, data module and trainer of ``config`` with this benchmark's common overrides."""
    cuda = plan.device.type == "cuda"
    args = [
        "-c", str(ROOT / config), "--seed_everything", str(plan.seed),
        "--trainer.accelerator", "gpu" if cuda else "cpu", "--trainer.devices", "1",
        "--trainer.precision", "bf16-mixed" if cuda else "32-true",
        "--trainer.val_check_interval", "null", "--trainer.check_val_every_n_epoch", "100000",  # we validate
        "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", str(plan.log_every),
        "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",  # one checkpoint, saved here
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run_dir), "--trainer.logger.init_args.save_dir", str(run_dir),
    ]
    if plan.val_batches:
        args += ["--trainer.limit_val_batches", str(plan.val_batches)]
    with warnings.catch_warnings():  # our own options are in sys.argv, which LightningCLI warns about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return ZooCLI(args=args + extra, run=False)


def budget_args(seconds: float, steps) -> list[str]:
    """A step budget, or a wall-clock one (constant learning rate after warm-up: no known horizon)."""
    if steps is not None:
        return ["--trainer.max_steps", str(steps)]
    hms = time.strftime("%H:%M:%S", time.gmtime(max(1, round(seconds))))
    return ["--trainer.max_steps", str(10**9), "--trainer.max_time", f"00:{hms}",
            "--model.init_args.schedule", "constant"]


def size_args(family: str, plan: SimpleNamespace) -> list[str]:
    size = plan.sizes[family]
    values = {"d_model": size.d_model, "n_layer": size.n_layer, "n_head": size.n_head, "d_ff": size.d_ff}
    if family == "t5":
        values["d_kv"] = size.d_model // size.n_head
    else:
        values["max_seq_len"] = plan.block_size
    if plan.dropout is not None:
        values["dropout"] = plan.dropout
    return [arg for key, value in values.items() for arg in (MODEL + key, str(value))]


def pretrain_args(family: str, plan: SimpleNamespace) -> list[str]:
    budget = budget_args(plan.budget_seconds, 10**9 if plan.budget_flops is not None else None)
    if family == "clip":
        return budget
    data = ["--data.init_args.block_size", str(plan.block_size), "--data.init_args.batch_size", str(plan.batch_size),
            "--data.init_args.vocab_size", str(plan.vocab_size)]
    quiet = {"gpt": ["--model.init_args.sample_prompt", ""],  # no sampling or decoding inside validation
             "t5": ["--model.init_args.generate_batches", "0"], "bart": ["--model.init_args.generate_batches", "0"],
             "bert": [MODEL + "pooler", "false"]}[family]  # MLM never trains the pooler; fine-tuning adds it
    return size_args(family, plan) + data + quiet + budget


def pretrain(family: str, plan: SimpleNamespace, root: Path, peak) -> tuple[dict, str]:
    """Pre-train one model within the budget; its record and the checkpoint written at the end."""
    run_dir = root / family
    cli = build(CONFIGS[family], run_dir, plan, pretrain_args(family, plan))
    task, dm, objective = cli.model, cli.datamodule, _runs.OBJECTIVES[family]
    dm.setup("fit")
    batch = _runs.to_device(next(iter(dm.val_dataloader())), plan.device)
    flops, tokens = _runs.flops_per_step(task.model, batch, objective), _runs.tokens_in(family, task.model, batch)
    if plan.budget_flops is not None:
        cli.trainer.fit_loop.epoch_loop.max_steps = max(1, int(plan.budget_flops // flops))
    meter = _runs.StepMeter(partial(_runs.tokens_in, family, task.model))
    cli.trainer.callbacks.append(meter)
    cli.trainer.fit(task, datamodule=dm)
    scores = validate(cli)
    ckpt = str(root / f"{family}.ckpt")
    cli.trainer.save_checkpoint(ckpt, weights_only=False)  # the full checkpoint, said explicitly
    summary = meter.summary()
    rate = summary["tokens_per_s"]
    record = {
        "family": family, "config": CONFIGS[family], "objective": OBJECTIVES[family],
        "size": dataclasses.asdict(plan.sizes[family]) if family in plan.sizes else None,
        "non_embedding_params": _runs.non_embedding_parameters(task.model),
        "total_params": sum(p.numel() for p in task.model.parameters()),
        "vocab_size": task.model.config.vocab_size,
        "batch_shapes": {k: list(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)},
        "flops_per_step": flops, "tokens_per_step": tokens, "flops_per_token": round(flops / tokens), **summary,
        "mfu": round(rate * flops / tokens / peak, 5) if rate and peak else None,
        "val": scores, "curve": _runs.loss_curve(run_dir),
        "step_ms": _runs.time_backends(task.model, batch, objective, plan.impls, plan.timing_steps, plan.seed),
    }
    return record, ckpt


def finetune(family: str, plan: SimpleNamespace, root: Path, ckpt: str) -> dict:
    """Fine-tune the family's classify config from ``ckpt`` (weights and tokenizer) within the budget."""
    config = f"configs/{family}/classify.yaml"
    args = size_args(family, plan) + [
        "--model.init_args.init_from", ckpt, "--data.init_args.tokenizer", ckpt,
        "--data.init_args.max_length", str(plan.block_size), "--data.init_args.batch_size", str(plan.batch_size),
    ] + budget_args(plan.finetune_seconds, plan.finetune_steps)
    cli = build(config, root / f"{family}-classify", plan, args)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    dm = cli.datamodule
    return {"config": config, "steps": cli.trainer.global_step, "seconds": round(seconds, 1), "val": validate(cli),
            "labels": dm.label_names, "train_examples": len(dm.examples("train")),
            "val_examples": len(dm.examples("val"))}


def validate(cli: ZooCLI) -> dict[str, float]:
    scores = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {k.split("/", 1)[1]: round(float(v), 4) for k, v in scores.items() if k.startswith("val/")}


# ---------------------------------------------------------------------------- bookkeeping
def check_matched(results: dict) -> bool:
    """Whether the text families' non-embedding parameter counts are within MATCH_TOLERANCE of their
    mean; says so when they are not (sizes from the command line can be anything)."""
    counts = {f: r["pretrain"]["non_embedding_params"] for f, r in results["families"].items()}
    if not counts:
        return True
    mean = sum(counts.values()) / len(counts)
    for f, r in results["families"].items():
        r["pretrain"]["params_vs_mean"] = round(counts[f] / mean, 4)
    matched = all(abs(n / mean - 1) <= MATCH_TOLERANCE for n in counts.values())
    if not matched:
        print(f"warning: non-embedding parameters differ by more than {MATCH_TOLERANCE:.0%}: {counts}", flush=True)
    return matched


def progress(name: str, record: dict) -> None:
    pre, ft = record["pretrain"], record.get("finetune")
    line = (f"[compare] {name}: {pre['non_embedding_params']:,} non-embedding params, {pre['steps']} steps, "
            f"{pre['tokens_per_s'] or 0:,.0f} tokens/s, val loss {pre['val'].get('loss', math.nan):.3f}")
    if ft:
        line += f"; fine-tuned {ft['steps']} steps: accuracy {ft['val'].get('acc', math.nan):.3f}"
    print(line, flush=True)


def environment(plan: SimpleNamespace) -> dict:
    cuda = plan.device.type == "cuda"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": torch.cuda.get_device_name(plan.device) if cuda
        else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "device_type": plan.device.type, "dtype": "bf16-mixed" if cuda else "float32",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": lightning.__version__,
        "triton": triton_version, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def jsonable(settings: dict) -> dict:
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}
