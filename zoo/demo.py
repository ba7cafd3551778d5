"""`make demo`: train the nano GPT on the Python documentation topics, then report.

Runs `zoo fit -c configs/gpt/nano.yaml` on the CPU with a progress bar, then prints the validation
perplexity next to a unigram baseline (what a model knowing only token frequencies scores), a
sample continuing a prompt, and where the checkpoint and tokenizer were saved.

    python -m zoo.demo [--config configs/gpt/nano.yaml] [--prompt "..."] [extra `zoo fit` flags]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m zoo.demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIGS / "gpt" / "nano.yaml"), help="model/data/trainer YAML")
    p.add_argument("--prompt", default="A class definition", help="text the sample continues")
    p.add_argument("--tokens", type=int, default=60, help="sample length in tokens")
    p.add_argument("--save-results", default=None, help="also write the figures to this JSON file")
    return p.parse_known_args(argv)


def report(cli, prompt: str, tokens: int, seconds: float) -> dict:
    """Validate the final weights and print the results; returns the figures."""
    trainer, task, data = cli.trainer, cli.model, cli.datamodule
    metrics = trainer.validate(task, datamodule=data, verbose=False)[0]
    ppl, loss = float(metrics["val/ppl"]), float(metrics["val/loss"])
    baseline = data.unigram_perplexity()
    sample = task.sample(data.tokenizer, prompt, tokens, temperature=0.8, top_k=40)
    ckpt = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None
    line = "─" * 72
    print(f"\n{line}\nzoo demo — nano GPT on the Python documentation topics ({seconds / 60:.1f} min of training)")
    print(line)
    print(f"  parameters (non-embedding): {task.model.num_parameters():,}")
    print(f"  validation loss:        {loss:.3f} nats/token")
    print(f"  validation perplexity:  {ppl:.1f}")
    print(f"  unigram baseline:       {baseline:.1f}   (token frequencies only; {baseline / ppl:.1f}× worse)")
    print(f"\n  sample ({prompt!r} →):\n")
    print("    " + sample.replace("\n", "\n    "))
    print(f"\n  checkpoint: {ckpt}")
    print(f"  tokenizer:  {getattr(task, 'tokenizer_file', None) or data.tokenizer_path}")
    print(f"\n  next: zoo generate --model {ckpt} --prompt \"def \"\n{line}")
    return {"val_ppl": ppl, "val_loss": loss, "unigram_ppl": baseline, "sample": sample, "checkpoint": ckpt}


def save(path: str, figures: dict, seconds: float, config: str, extra: list[str]) -> None:
    import datetime
    import json
    import platform

    import lightning
    import torch

    record = {"benchmark": "demo", "date": datetime.date.today().isoformat(), "config": config, "overrides": extra,
              "device": f"cpu-{platform.machine()}-{torch.get_num_threads()}threads",
              "train_seconds_incl_data": round(seconds, 1),
              "versions": {"torch": torch.__version__, "lightning": lightning.__version__}, **figures}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    from zoo.errors import ZooError
    from zoo.lightning_cli import ZooCLI

    args, extra = parse(sys.argv[1:] if argv is None else argv)
    try:
        start = time.time()
        sys.argv = sys.argv[:1]  # the demo's own flags are parsed; LightningCLI gets `args` only
        cli = ZooCLI(args=["fit", "-c", args.config, *extra])
        seconds = time.time() - start
        figures = report(cli, args.prompt, args.tokens, seconds)
        if args.save_results:
            save(args.save_results, figures, seconds, args.config, extra)
    except ZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
