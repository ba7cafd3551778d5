"""Structured pruning of fine-tuned classifiers: accuracy kept and speed bought, on the CPU.

For each family (GPT and BERT by default), on the embedded topic-classification task
(configs/<family>/classify.yaml's data):

1. the base: the family's pre-training config for `--pretrain-steps` (benchmarks/adapt.py's `pretrain`,
   reused when already there);
2. full fine-tuning of a classifier on that base (`zoo.tasks.SequenceClassification`, head mode) for
   `--steps` steps: the reference accuracy;
3. structured pruning of the fine-tuned backbone (`zoo.compress.prune.prune_structured`) to `--target`
   of its non-embedding parameters, MLP neurons ranked by first-order (Taylor) importance on the
   task's loss over `--score-batches` training batches (`--scores magnitude`: the data-free weight
   proxy), the classifier head kept;
4. a recovery fine-tune of the pruned classifier for `--recovery-steps` steps at `--recovery-lr`;
5. for comparison, the fine-tuned classifier with its backbone quantized by torchao (`--quantize`
   schemes; the head stays float).

Reported per stage: parameters (all, and non-embedding), validation accuracy (the task's `val/acc`),
and the median wall time of a batched forward over the whole validation set (batch 16, up to 128
tokens, eval mode, no grad, `--threads` torch threads; median of `--runs` passes). The criterion of
issue 18: after recovery, accuracy within 3 points of the unpruned classifier, and faster.

    .venv/bin/python benchmarks/prune_classify.py [--families gpt bert] [--target 0.7] [--of non-embedding|all]

Writes benchmarks/results/prune-classify-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from benchmarks.compress import median_s  # noqa: E402  (the repository root is on sys.path above)


def data_module(family: str, base: Path, cache: str):
    """The classify config's data module, with the base's tokenizer."""
    import yaml

    from zoo.data import ClassificationDataModule

    cfg = yaml.safe_load((ROOT / f"configs/{family}/classify.yaml").read_text())["data"]["init_args"]
    cfg.update(tokenizer=str(base), cache_dir=cache)
    dm = ClassificationDataModule(**cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def trainer(steps: int):
    import lightning as L

    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                     check_val_every_n_epoch=None, val_check_interval=steps, num_sanity_val_steps=0)


def fit(task, dm, steps: int, lr: float) -> float:
    """Fine-tune `task` for `steps` steps at peak `lr`; wall seconds."""
    task.optimizer_factory = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01)
    t0 = time.perf_counter()
    trainer(steps).fit(task, dm)
    return time.perf_counter() - t0


def accuracy(task, dm) -> float:
    return float(trainer(1).validate(task, dm, verbose=False)[0]["val/acc"])


@torch.no_grad()
def forward_s(task, dm, runs: int) -> float:
    """Median seconds of one eval-mode pass of the classifier over the whole validation set."""
    task.eval()
    batches = list(dm.val_dataloader())

    def once():
        for b in batches:
            task.classifier(task.features(b))

    return median_s(once, runs, warmup=1)


def taylor(task, dm, n_batches: int) -> dict:
    """First-order importance of every MLP neuron of the backbone on the classification loss."""
    import torch.nn.functional as F

    from zoo.compress.prune import taylor_scores

    task.eval()  # no dropout while scoring
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(n_batches)]
    loss = lambda net, b: F.cross_entropy(task.classifier(task.features(b, net)), b["labels"])  # noqa: E731
    return taylor_scores(task.model, loss, batches)


def run_family(family: str, args, work: Path) -> list[dict]:
    from adapt import pretrain

    from zoo.checkpoint import model_from_checkpoint
    from zoo.compress import quantize
    from zoo.compress.prune import prune_structured
    from zoo.tasks import SequenceClassification

    cache = str(work / "cache")
    base = pretrain(family, args.pretrain_steps, work, cache, "cpu")
    dm = data_module(family, base, cache)
    torch.manual_seed(args.seed)
    net, _ = model_from_checkpoint(str(base))
    task = SequenceClassification(net, mode="head", warmup_steps=20, min_lr_ratio=0.1)
    rows = []

    def row(stage: str, train_s: float = float("nan"), of=None) -> None:
        t = of or task
        r = {"family": family, "stage": stage, "params": sum(p.numel() for p in t.parameters()),
             "non_embedding_params": t.model.num_parameters(non_embedding=True), "val_acc": accuracy(t, dm),
             "forward_s": forward_s(t, dm, args.runs), "train_s": train_s}
        rows.append(r)
        print(json.dumps(r), flush=True)

    s = fit(task, dm, args.steps, args.lr)
    row(f"fine-tuned ({args.steps} steps)", s)
    for scheme in args.quantize:  # the fine-tuned classifier with its backbone quantized (head float)
        q = SequenceClassification(copy.deepcopy(task.model), mode="head", num_labels=task.num_labels)
        q.classifier.load_state_dict(task.classifier.state_dict())
        quantize(q.model, scheme)
        row(f"fine-tuned, {scheme}", of=q)
    scores = taylor(task, dm, args.score_batches) if args.scores == "taylor" else None
    target = args.target
    if args.of == "all":  # the share of all the model's parameters, embeddings included (they stay)
        total, inner = task.model.num_parameters(non_embedding=False), task.model.num_parameters(non_embedding=True)
        target = (args.target * total - (total - inner)) / inner
    task.model = prune_structured(task.model, target, scores=scores)
    row(f"pruned to {args.target:.0%} of {'all' if args.of == 'all' else 'non-emb.'} params (no recovery)")
    s = fit(task, dm, args.recovery_steps, args.recovery_lr)
    row(f"pruned + {args.recovery_steps}-step recovery", s)
    return rows


def markdown(result: dict) -> str:
    e, a = result["env"], result["args"]
    lines = [f"Structured pruning and quantization of fine-tuned topic classifiers ({e['device']}, {e['date']}, torch {e['torch']}, "
             f"lightning {e['lightning']}, torchao {e.get('torchao', '?')}, {e['threads']} torch thread(s), load average {e['load_average'][0]:.1f} → "
             f"{result['load_average_end'][0]:.1f} on {e['cpus']} CPUs). Base pre-trained {a['pretrain_steps']} "
             f"steps; fine-tuned {a['steps']} steps at lr {a['lr']}; MLP neurons pruned to {a['target']:.0%} of the "
             f"{'model' if a.get('of') == 'all' else 'non-embedding'} parameters by {a['scores']} importance; recovery {a['recovery_steps']} steps at lr "
             f"{a['recovery_lr']}. Forward: the whole validation set, batch 16 × ≤128 tokens, median of {a['runs']}.",
             "", "| family | stage | params | non-emb. params | val acc | forward ms | speed-up | train s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        ref = next(x for x in result["rows"] if x["family"] == r["family"])
        lines.append(f"| {r['family']} | {r['stage']} | {r['params']:,} | {r['non_embedding_params']:,} | "
                     f"{r['val_acc']:.3f} | {1e3 * r['forward_s']:.1f} | {ref['forward_s'] / r['forward_s']:.2f}× | "
                     f"{r['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["gpt", "bert"], choices=["gpt", "bert", "t5", "bart"])
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300, help="full fine-tuning steps")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--target", type=float, default=0.7, help="fraction of non-embedding parameters kept")
    p.add_argument("--of", choices=["non-embedding", "all"], default="non-embedding",
                   help="what --target is a share of: the non-embedding parameters, or all the model's")
    p.add_argument("--scores", choices=["taylor", "magnitude"], default="taylor")
    p.add_argument("--quantize", nargs="*", default=["int8-weight", "int8-dynamic"],
                   help="torchao schemes also measured on the fine-tuned classifier (none: --quantize)")
    p.add_argument("--score-batches", type=int, default=8)
    p.add_argument("--recovery-steps", type=int, default=150)
    p.add_argument("--recovery-lr", type=float, default=3e-4)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--work", default="runs/adapt", help="where the pre-trained bases are (shared with adapt.py)")
    p.add_argument("--name", default="prune-classify-cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lightning
    import torchao

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": f"cpu {platform.machine()}", "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "lightning": lightning.__version__, "torchao": torchao.__version__, "python": platform.python_version(),
           "load_average": os.getloadavg()}
    rows = [r for family in args.families for r in run_family(family, args, ROOT / args.work)]
    result = {"env": env, "args": vars(args), "rows": rows, "load_average_end": os.getloadavg()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
