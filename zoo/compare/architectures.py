"""The runs behind `zoo compare` (`benchmarks/architectures.py`): each family's pre-training,
fine-tuning and backend timing through the harness (`zoo.compare.harness`: its YAML config plus
overrides for size, budget, device and output folder), and the results they add up to."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch

from zoo import families as registry
from zoo.compare import harness, report, runs
from zoo.errors import ZooError
from zoo.flops import peak_flops
from zoo.models.base import Capability
from zoo.tasks.objectives import objective_of

MODEL = harness.MODEL
MATCH_TOLERANCE = 0.05  # non-embedding parameter counts within 5% of their mean count as matched
QUIET = {  # per pre-training task: no sampling or decoding inside validation; MLM never trains BERT's pooler
    "CausalLM": ["--model.init_args.sample_prompt", ""], "Seq2SeqLM": ["--model.init_args.generate_batches", "0"],
    "MaskedLM": [MODEL + "pooler", "false"], "Contrastive": [],
}


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
    p.out = Path(p.out_dir) if p.out_dir else harness.ROOT / "benchmarks" / "results"
    return p


def run(settings: dict) -> dict:
    """Everything `compare` promises: train, fine-tune and time each model, then write the results."""
    plan = plan_from(settings)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    peak, peak_kind = peak_flops(plan.device, "bf16-mixed" if plan.device.type == "cuda" else "32-true")
    results = {"benchmark": "architectures", "environment": harness.environment(plan.device),
               "settings": jsonable(settings), "peak_flops": peak, "peak_kind": peak_kind,
               "load_before": harness.load_average(), "families": {}, "clip": None}
    with tempfile.TemporaryDirectory(prefix="zoo-compare-") as tmp:
        root = Path(tmp)
        for family in plan.families:
            pre, ckpt = pretrain(registry.get(family), plan, root, peak)
            results["families"][family] = {"pretrain": pre,
                                           "finetune": finetune(registry.get(family), plan, root, ckpt)}
            progress(family, results["families"][family])
        if plan.clip:
            results["clip"], _ = pretrain(registry.get("clip"), plan, root, peak)
            progress("clip", {"pretrain": results["clip"]})
    results["load_after"] = harness.load_average()
    results["params_matched"] = check_matched(results)
    paths = report.write(results, plan.out)
    print(report.markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return results


# ---------------------------------------------------------------------------- the runs
def build(config: str, run_dir: Path, plan: SimpleNamespace, extra: list[str]):
    return harness.build(config, run_dir, extra, device=plan.device, seed=plan.seed, log_every=plan.log_every,
                         val_batches=plan.val_batches)


def size_args(family: registry.Family, plan: SimpleNamespace) -> list[str]:
    size = plan.sizes[family.name]
    values = {"d_model": size.d_model, "n_layer": size.n_layer, "n_head": size.n_head, "d_ff": size.d_ff}
    fields = {f.name for f in dataclasses.fields(family.config)}
    if "d_kv" in fields:  # per-head width set explicitly (T5); relative positions need no table length
        values["d_kv"] = size.d_model // size.n_head
    if "max_seq_len" in fields:
        values["max_seq_len"] = plan.block_size
    if plan.dropout is not None:
        values["dropout"] = plan.dropout
    return [arg for key, value in values.items() for arg in (MODEL + key, str(value))]


def pretrain_args(family: registry.Family, plan: SimpleNamespace) -> list[str]:
    budget = harness.budget_args(plan.budget_seconds, 10**9 if plan.budget_flops is not None else None)
    if family.can(Capability.IMAGE_TEXT):  # images and captions of its own data: its config's sizes
        return budget
    data = ["--data.init_args.block_size", str(plan.block_size), "--data.init_args.batch_size", str(plan.batch_size),
            "--data.init_args.vocab_size", str(plan.vocab_size)]
    return size_args(family, plan) + data + QUIET[family.task] + budget


def pretrain(family: registry.Family, plan: SimpleNamespace, root: Path, peak) -> tuple[dict, str]:
    """Pre-train one model within the budget; its record and the checkpoint written at the end."""
    run_dir = root / family.name
    cli = build(family.pretrain_config, run_dir, plan, pretrain_args(family, plan))
    task, dm = cli.model, cli.datamodule
    objective = objective_of(task.model)
    dm.setup("fit")
    batch = runs.to_device(next(iter(dm.val_dataloader())), plan.device)
    cost = runs.step_cost(task, batch)  # the FLOPs Throughput logs MFU from
    flops, tokens = cost["flops_per_step"], cost["tokens_per_step"]
    if plan.budget_flops is not None:
        cli.trainer.fit_loop.epoch_loop.max_steps = max(1, int(plan.budget_flops // flops))
    meter = runs.StepMeter(partial(runs.tokens_in, task.model))
    cli.trainer.callbacks.append(meter)
    cli.trainer.fit(task, datamodule=dm)
    scores = harness.validate(cli)
    ckpt = harness.checkpoint(cli, root / f"{family.name}.ckpt")
    summary = meter.summary()
    rate = summary["tokens_per_s"]
    record = {
        "family": family.name, "config": family.pretrain_config, "objective": family.objective,
        "size": dataclasses.asdict(plan.sizes[family.name]) if family.name in plan.sizes else None,
        "non_embedding_params": task.model.num_parameters(non_embedding=True),
        "total_params": sum(p.numel() for p in task.model.parameters()),
        "vocab_size": task.model.config.vocab_size,
        "batch_shapes": {k: list(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)},
        **cost, **summary,
        "mfu": round(rate * flops / tokens / peak, 5) if rate and peak else None,
        "val": scores, "curve": runs.loss_curve(run_dir),
        "step_ms": runs.time_backends(task.model, batch, objective, plan.impls, plan.timing_steps, plan.seed),
    }
    return record, ckpt


def finetune(family: registry.Family, plan: SimpleNamespace, root: Path, ckpt: str) -> dict:
    """Fine-tune the family's classify config from `ckpt` (weights and tokenizer) within the budget."""
    config = harness.classify_config(family)
    args = size_args(family, plan) + harness.finetune_args(ckpt) + [
        "--data.init_args.max_length", str(plan.block_size), "--data.init_args.batch_size", str(plan.batch_size),
    ] + harness.budget_args(plan.finetune_seconds, plan.finetune_steps)
    cli = build(config, root / f"{family.name}-classify", plan, args)
    steps, seconds = harness.fit(cli)
    return {"config": config, "steps": steps, "seconds": seconds, "val": harness.validate(cli),
            **harness.classification_data(cli)}


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


def jsonable(settings: dict) -> dict:
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}
