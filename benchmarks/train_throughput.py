"""Training throughput of zoo's GPT against Hugging Face's `GPT2LMHeadModel` built with the identical
configuration and weights: same batch, same process, same optimizer (torch AdamW, defaults), fp32,
every row timed interleaved with the others so that background load hits all alike.

One training step = forward, next-token cross-entropy, backward, AdamW step, on a batch `x` (B, seq)
of token ids; the targets are `x` shifted left by one, the last position ignored (-100), which is what
HF computes from `labels=x`. So every row trains on the same tokens and starts from the same loss.
The rows, each exactly what it runs:

- `zoo_labels`:  `zoo(x, labels=y)` — zoo as users (and `zoo.tasks.CausalLM`) train it: the head and
  the loss fused and chunked (`zoo.blocks.loss`), no (B, seq, V) logits.
- `hf_labels`:   `hf(input_ids=x, labels=x).loss` — HF as users train it; GPT-2's default
  `config.use_cache=True` also fills a KV cache during training.
- `hf_labels_no_cache`: the same with `use_cache=False`.
- `zoo`:         `F.cross_entropy(zoo(x).flatten(0, 1), y.flatten())` — logits, then the loss.
- `hf`, `hf_no_cache`: `F.cross_entropy(hf(input_ids=x[, use_cache=False]).logits ...)`, likewise.

The rows of one model share one AdamW and keep training that model (timing does not depend on the
weights); the first-step losses are taken before any step, under no_grad.

Reported: median step time over `--steps` timed steps (after `--warmup`), tokens/s = batch·seq / median,
and every zoo/HF ratio (HF median / zoo median: > 1 means zoo is faster).
Writes `benchmarks/results/train_throughput-<device>.json` (and `.csv`).

    python benchmarks/train_throughput.py [--device cpu] [--threads 2] [--d-model 256 --layers 4 --heads 4 --seq 256 --batch 8]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def build_models(args):
    """The HF model with random weights, and ours loaded from it through `zoo.from_hf`."""
    import transformers

    import zoo
    from zoo.blocks import set_attention_impl

    cfg = transformers.GPT2Config(vocab_size=args.vocab, n_positions=args.seq, n_embd=args.d_model, n_layer=args.layers,
                                  n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = zoo.from_hf(tmp)
    set_attention_impl(ours, args.attn_impl)  # from_hf picks eager attention for parity checks; train with the fast path
    return ours.to(args.device).train(), hf.to(args.device).train()


ROWS = {  # what each row runs per step, recorded in the results file; x (B, seq), y = x shifted, last -100
    "zoo_labels": "zoo(x, labels=y): fused, chunked head + loss (zoo.blocks.loss)",
    "hf_labels": "hf(input_ids=x, labels=x).loss (HF's own loss; default use_cache=True)",
    "hf_labels_no_cache": "hf(input_ids=x, labels=x, use_cache=False).loss",
    "zoo": "F.cross_entropy(zoo(x) logits, y)",
    "hf": "F.cross_entropy(hf(input_ids=x).logits, y) (default use_cache=True)",
    "hf_no_cache": "F.cross_entropy(hf(input_ids=x, use_cache=False).logits, y)",
}
ZOO_ROWS, HF_ROWS = [r for r in ROWS if r.startswith("zoo")], [r for r in ROWS if r.startswith("hf")]


def loss_functions(ours, hf) -> dict:
    """Each row's loss as a function of the batch `x` (B, seq); see the module docstring."""

    def targets(x):  # next token of each position; the last has none
        return F.pad(x[:, 1:], (0, 1), value=-100)

    def ce(logits, x):
        return F.cross_entropy(logits.flatten(0, 1).float(), targets(x).flatten(), ignore_index=-100)

    return {
        "zoo_labels": lambda x: ours(x, labels=targets(x)),
        "hf_labels": lambda x: hf(input_ids=x, labels=x).loss,
        "hf_labels_no_cache": lambda x: hf(input_ids=x, labels=x, use_cache=False).loss,
        "zoo": lambda x: ce(ours(x), x),
        "hf": lambda x: ce(hf(input_ids=x).logits, x),
        "hf_no_cache": lambda x: ce(hf(input_ids=x, use_cache=False).logits, x),
    }


def make_step(loss_fn, opt):
    def step(x: torch.Tensor) -> float:
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(args) -> dict:
    ours, hf = build_models(args)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to(args.device) for _ in range(4)]
    losses = loss_functions(ours, hf)
    with torch.no_grad():  # identical weights → identical first loss on every row
        first = {name: fn(batches[0]).item() for name, fn in losses.items()}
    opts = {"zoo": torch.optim.AdamW(ours.parameters(), lr=1e-4), "hf": torch.optim.AdamW(hf.parameters(), lr=1e-4)}
    steps = {name: make_step(fn, opts[name.split("_")[0]]) for name, fn in losses.items()}
    times = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, fn in steps.items():  # interleaved, so background load hits every row alike
            sync(args.device)
            t0 = time.perf_counter()
            fn(batches[i % len(batches)])
            sync(args.device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "first_step_loss": first,
        "median_step_s": med,
        "tokens_per_s": {name: tokens / m for name, m in med.items()},
        "speedup": {f"{z}_over_{h}": med[h] / med[z] for z in ZOO_ROWS for h in HF_ROWS},
        "speedup_zoo_over_hf": med["hf"] / med["zoo"],
        "speedup_zoo_over_hf_no_cache": med["hf_no_cache"] / med["zoo"],
        "all_step_s": times,
    }


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attn-impl", default="torch", choices=["eager", "torch", "triton"])
    p.add_argument("--out", default=None, help="results file stem (default train_throughput-<device>)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    result = measure(args)
    dev = device_name(args.device)
    record = {
        "benchmark": "train_throughput", "date": datetime.date.today().isoformat(), "device": dev,
        "dtype": "float32", "shape": {"batch": args.batch, "seq": args.seq, "d_model": args.d_model,
                                      "layers": args.layers, "heads": args.heads, "vocab": args.vocab},
        "steps": args.steps, "warmup": args.warmup, "attn_impl": args.attn_impl, "rows": ROWS,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.out or "train_throughput-" + re.sub(r"[^a-z0-9]+", "-", dev.lower()).strip("-")
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "median_step_s", "tokens_per_s", "device", "batch", "seq", "d_model", "layers", "torch", "date"])
        for name in ROWS:
            w.writerow([name, f"{result['median_step_s'][name]:.4f}", f"{result['tokens_per_s'][name]:.0f}", dev,
                        args.batch, args.seq, args.d_model, args.layers, torch.__version__, record["date"]])
    print_table(record)
    print(f"wrote {RESULTS / stem}.json and .csv")
    return 0


def print_table(record: dict) -> None:
    s = record["shape"]
    print(f"device {record['device']}, batch {s['batch']} × seq {s['seq']}, d_model {s['d_model']}, {s['layers']} layers, fp32")
    print(f"{'row':<20}{'median step (s)':>16}{'tokens/s':>10}{'first loss':>12}  runs")
    for name, what in ROWS.items():
        print(f"{name:<20}{record['median_step_s'][name]:>16.4f}{record['tokens_per_s'][name]:>10.0f}"
              f"{record['first_step_loss'][name]:>12.5f}  {what}")
    print("zoo speed-up (HF median / zoo median):")
    for pair, ratio in record["speedup"].items():
        print(f"  {pair:<40}{ratio:.2f}×")


if __name__ == "__main__":
    sys.exit(main())
