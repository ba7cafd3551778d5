"""Training throughput of zoo's GPT against Hugging Face's `GPT2LMHeadModel` built with the identical
configuration and weights: same batch, same process, same optimizer, measured interleaved.

One training step = forward, next-token cross-entropy, backward, AdamW step. Reported: median step
time over `--steps` timed steps (after `--warmup`), tokens/s = batch·seq / median, and the ratios.
HF is timed twice: called as users call it (`model(input_ids=...)`, which with GPT-2's default
`config.use_cache=True` also fills a KV cache during training), and with `use_cache=False`.
Writes `benchmarks/results/train_throughput-<device>.json` (and `.csv`).

    python benchmarks/train_throughput.py [--device cpu] [--d-model 256 --layers 4 --heads 4 --seq 256 --batch 8]
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

    cfg = transformers.GPT2Config(vocab_size=args.vocab, n_positions=args.seq, n_embd=args.d_model, n_layer=args.layers,
                                  n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = zoo.from_hf(tmp)
    for m in ours.modules():  # from_hf picks eager attention for parity checks; train with the fast path
        if hasattr(m, "impl") and type(m).__name__ == "Attention":
            m.impl = args.attn_impl
    return ours.to(args.device).train(), hf.to(args.device).train()


def make_step(model, is_hf: bool, lr: float = 1e-4, **call):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def step(ids: torch.Tensor) -> float:
        inputs, labels = ids[:, :-1], ids[:, 1:]
        logits = model(input_ids=inputs, **call).logits if is_hf else model(input_ids=inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
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
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g).to(args.device) for _ in range(4)]
    steps = {"zoo": make_step(ours, False), "hf": make_step(hf, True)}
    first = {name: fn(batches[0]) for name, fn in steps.items()}  # identical weights → identical first loss
    steps["hf_no_cache"] = make_step(hf, True, use_cache=False)
    times = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, fn in steps.items():  # interleaved, so background load hits both alike
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
    args = p.parse_args(argv)

    import transformers

    result = measure(args)
    dev = device_name(args.device)
    record = {
        "benchmark": "train_throughput", "date": datetime.date.today().isoformat(), "device": dev,
        "dtype": "float32", "shape": {"batch": args.batch, "seq": args.seq, "d_model": args.d_model,
                                      "layers": args.layers, "heads": args.heads, "vocab": args.vocab},
        "steps": args.steps, "warmup": args.warmup, "attn_impl": args.attn_impl,
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
        for name in ("zoo", "hf", "hf_no_cache"):
            w.writerow([name, f"{result['median_step_s'][name]:.4f}", f"{result['tokens_per_s'][name]:.0f}", dev,
                        args.batch, args.seq, args.d_model, args.layers, torch.__version__, record["date"]])
    print(f"device {dev}, batch {args.batch} × seq {args.seq}, d_model {args.d_model}, {args.layers} layers, fp32")
    print(f"{'model':<12}{'median step (s)':>18}{'tokens/s':>12}")
    for name in ("zoo", "hf", "hf_no_cache"):
        print(f"{name:<12}{result['median_step_s'][name]:>18.4f}{result['tokens_per_s'][name]:>12.0f}")
    print(f"zoo / hf_no_cache speed-up: {result['speedup_zoo_over_hf_no_cache']:.2f}×")
    print(f"zoo / hf speed-up: {result['speedup_zoo_over_hf']:.2f}×   (first-step loss zoo {result['first_step_loss']['zoo']:.5f},"
          f" hf {result['first_step_loss']['hf']:.5f})")
    print(f"wrote {RESULTS / stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
