"""`make demo`: train the nano GPT on the Python documentation topics, then report.

Runs `zoo fit -c configs/gpt/nano.yaml` on the CPU, then prints the validation loss in bits per
character — comparable across tokenizers — next to two baselines scored on exactly the same
validation characters: a unigram model (token frequencies only) and a bigram model (each token
given the one before, Witten-Bell smoothed), both counted on the training split. Then a sample
continuing a prompt, the loss-curve PNG and where the checkpoint and tokenizer went.

    python -m zoo.demo [--config configs/gpt/nano.yaml] [--prompt "..."] [--save-results FILE] [zoo fit flags]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m zoo.demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIGS / "gpt" / "nano.yaml"), help="model/data/trainer YAML")
    p.add_argument("--prompt", default="A class definition", help="text the sample continues")
    p.add_argument("--tokens", type=int, default=160, help="sample length in tokens")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the sample")
    p.add_argument("--save-results", default=None, help="also write the figures to this JSON file")
    return p.parse_known_args(argv)


# --------------------------------------------------------------------------- baselines
def ngram_nats(train: np.ndarray, val: np.ndarray, vocab: int) -> tuple[float, float]:
    """Summed cross-entropy (nats) of the val targets `val[1:]` under a unigram and a bigram model of `train`.

    Unigram: add-one smoothed frequencies. Bigram: Witten-Bell interpolation with the unigram,
    P(b|a) = (c(a,b) + n₁(a)·P(b)) / (c(a) + n₁(a)), n₁(a) the number of distinct followers of a —
    a standard smoothing that needs no tuning on the validation data.
    """
    train, val = train.astype(np.int64), val.astype(np.int64)
    counts = np.bincount(train, minlength=vocab).astype(np.float64)
    unigram = (counts + 1.0) / (counts.sum() + vocab)
    pair_ids, pair_counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
    context_total = np.bincount(pair_ids // vocab, weights=pair_counts, minlength=vocab)
    followers = np.bincount(pair_ids // vocab, minlength=vocab).astype(np.float64)
    prev, nxt = val[:-1], val[1:]
    idx = np.searchsorted(pair_ids, prev * vocab + nxt).clip(max=len(pair_ids) - 1)
    seen = np.where(pair_ids[idx] == prev * vocab + nxt, pair_counts[idx], 0).astype(np.float64)
    n1, total = followers[prev], context_total[prev]
    bigram = np.where(total > 0, (seen + n1 * unigram[nxt]) / np.maximum(total + n1, 1.0), unigram[nxt])
    return float(-np.log(unigram[nxt]).sum()), float(-np.log(bigram).sum())


def bits_per_character(data, val_loss: float) -> dict[str, float]:
    """The model's and the baselines' validation bits per character, over the same target tokens."""
    n = len(data.build_dataset("val").targets())  # the tokens the validation loss averages over
    val = np.asarray(data.tokens("val"))[: n + 1]
    chars = len(data.tokenizer.decode(val[1:].tolist(), skip_special_tokens=False))
    unigram, bigram = ngram_nats(np.asarray(data.tokens("train")), val, data.model_vocab_size)
    to_bpc = 1.0 / (chars * math.log(2))
    return {"val_bpc": val_loss * n * to_bpc, "unigram_bpc": unigram * to_bpc, "bigram_bpc": bigram * to_bpc,
            "val_chars": chars, "val_tokens": n, "chars_per_token": chars / n}


# --------------------------------------------------------------------------- report
def report(cli, args: argparse.Namespace, seconds: float) -> dict:
    """Validate the final weights, score the baselines and print the results; returns the figures."""
    trainer, task, data = cli.trainer, cli.model, cli.datamodule
    metrics = trainer.validate(task, datamodule=data, verbose=False)[0]
    loss = float(metrics["val/loss"])
    bpc = bits_per_character(data, loss)
    sample = task.sample(data.tokenizer, args.prompt, args.tokens, temperature=args.temperature, top_k=40)
    ckpt = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None
    log_dir = Path(trainer.log_dir) if trainer.logger is not None else None
    png = log_dir / "loss.png" if log_dir and (log_dir / "loss.png").is_file() else None
    line = "─" * 72
    print(f"\n{line}\nzoo demo — nano GPT on the Python documentation topics ({seconds / 60:.1f} min of training)")
    print(line)
    print(f"  parameters (non-embedding): {task.model.num_parameters():,}")
    print(f"  validation, bits per character (lower is better; {bpc['val_chars']:,} characters):")
    print(f"    nano GPT:         {bpc['val_bpc']:.3f}")
    print(f"    bigram baseline:  {bpc['bigram_bpc']:.3f}   (each token given the one before)")
    print(f"    unigram baseline: {bpc['unigram_bpc']:.3f}   (token frequencies only)")
    print(f"\n  sample ({args.prompt!r} →, temperature {args.temperature}):\n")
    print("    " + sample.replace("\n", "\n    "))
    print(f"\n  checkpoint:  {ckpt}")
    print(f"  loss curves: {png}")
    print(f"  tokenizer:   {getattr(task, 'tokenizer_file', None) or data.tokenizer_path}")
    print(f"\n  next: zoo generate --model {ckpt} --prompt \"def \"\n{line}")
    return {"val_loss_nats_per_token": loss, "val_ppl": float(metrics["val/ppl"]), **bpc, "sample_prompt": args.prompt,
            "sample_temperature": args.temperature, "sample": sample, "checkpoint": ckpt,
            "loss_png": str(png) if png else None}


def save(path: str, figures: dict, seconds: float, load: tuple, args: argparse.Namespace, extra: list[str],
         cli) -> None:
    import datetime
    import json
    import platform

    import lightning
    import torch
    import yaml

    cfg = yaml.safe_load(Path(args.config).read_text())
    shapes = {"model": cfg["model"]["init_args"]["model"]["init_args"]["config"],
              "data": {k: v for k, v in cfg["data"]["init_args"].items() if k in ("vocab_size", "block_size", "batch_size")},
              "max_steps": cli.trainer.max_steps, "steps_done": cli.trainer.global_step}
    record = {"benchmark": "demo", "date": datetime.date.today().isoformat(), "config": os.path.relpath(args.config),
              "overrides": extra, "device": f"cpu-{platform.machine()}-{torch.get_num_threads()}threads",
              "cpu_count": os.cpu_count(), "load_average_before": load[0], "load_average_after": load[1],
              "train_seconds_incl_data": round(seconds, 1), "shapes": shapes,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "lightning": lightning.__version__}, **figures}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    from zoo.cli import user_error
    from zoo.lightning_cli import ZooCLI

    args, extra = parse(sys.argv[1:] if argv is None else argv)
    try:
        load_before = os.getloadavg()[0]
        start = time.time()
        sys.argv = sys.argv[:1]  # the demo's own flags are parsed; LightningCLI gets `args` only
        cli = ZooCLI(args=["fit", "-c", args.config, *extra])
        seconds = time.time() - start
        load = (round(load_before, 2), round(os.getloadavg()[0], 2))
        figures = report(cli, args, seconds)
        if args.save_results:
            save(args.save_results, figures, seconds, load, args, extra, cli)
    except Exception as err:
        mistake = user_error(err)
        if mistake is None:
            raise
        print(f"error: {mistake}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
