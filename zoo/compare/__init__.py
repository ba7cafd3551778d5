"""Model families compared: pre-trained at matched size and budget, then fine-tuned on one task.

`compare` (the `zoo compare` command, and `benchmarks/architectures.py`) trains GPT, BERT, T5 and
BART side by side, and CLIP in a table of its own; `zoo.compare.families` runs the encoder families'
pre-train → fine-tune table of `benchmarks/families.py`. Both stand on one harness
(`zoo.compare.harness`: a family's YAML config through the same `ZooCLI` as `zoo fit`), take each
family's config and objective from the registry (`zoo.families`), its training loss from
`zoo.tasks.objectives`, and count FLOPs and MFU as `zoo fit` does (`zoo.flops`).

| module | what |
| --- | --- |
| `harness` | build, fit, validate and checkpoint one run from a config with the benchmarks' overrides |
| `runs` | step timing, tokens, peak memory, backend step times, loss curves |
| `architectures` | `compare`'s runs: pre-train, fine-tune, time each family; the results |
| `families` | `benchmarks/families.py`'s runs and table |
| `report` | `compare`'s CSV, JSON, markdown and plots |

This module imports only the standard library: `zoo` registers `compare` at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

TextFamily = Literal["gpt", "bert", "t5", "bart"]
Impl = Literal["eager", "torch", "triton"]
FAMILIES = ("gpt", "bert", "t5", "bart")


@dataclass
class Size:
    """One family's width and depth (an encoder-decoder has two stacks of ``n_layer`` blocks).

    Args:
        d_model: residual width.
        n_layer: transformer blocks per stack.
        n_head: attention heads (must divide d_model).
        d_ff: hidden width of the MLPs.
    """

    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_ff: int = 640


def compare(
    families: list[TextFamily] = list(FAMILIES),
    clip: bool = True,
    gpt: Size = Size(128, 4, 4, 640),
    bert: Size = Size(128, 4, 4, 640),
    t5: Size = Size(128, 2, 4, 512),
    bart: Size = Size(128, 2, 4, 512),
    budget_seconds: float = 60.0,
    budget_flops: Optional[float] = None,
    finetune_seconds: float = 30.0,
    finetune_steps: Optional[int] = None,
    block_size: int = 128,
    batch_size: int = 16,
    vocab_size: int = 4096,
    dropout: Optional[float] = 0.1,
    log_every: int = 5,
    val_batches: Optional[int] = None,
    impls: list[Impl] = ["eager", "torch", "triton"],
    timing_steps: int = 5,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    threads: Optional[int] = 1,
    seed: int = 1234,
    out_dir: Optional[str] = None,
) -> dict:
    """Compare GPT, BERT, T5 and BART (and CLIP) trained at matched size and budget.

    Each family pre-trains on the Python documentation topics with its own objective, then fine-tunes
    on topic classification; writes benchmarks/results/architectures-<device>.{csv,json,md} and PNG
    plots, and prints the table. The default sizes give the four families the same non-embedding
    parameter count within a few percent (GPT and BERT: 4 blocks of d_ff 640; T5 and BART: 2 + 2
    blocks of d_ff 512, as a decoder block with cross-attention holds one attention more). Lists are
    written [gpt,t5]; every option can come from a YAML file given with --config.

    Args:
        families: the text families to train.
        clip: also train CLIP (configs/clip/tiny.yaml) with the same budget, as a table of its own.
        gpt: GPT's size (configs/gpt/nano.yaml otherwise).
        bert: BERT's size (configs/bert/tiny.yaml otherwise; pre-trained without the pooler, which
            the masked-LM objective never trains; fine-tuning adds it).
        t5: T5's size (d_kv = d_model / n_head).
        bart: BART's size.
        budget_seconds: pre-training wall-clock seconds per model (the learning rate stays constant
            after warm-up, as the number of steps is not known in advance).
        budget_flops: pre-training FLOPs per model instead of seconds: steps = budget / FLOPs per
            step (cosine schedule over them); reproducible step counts on any machine.
        finetune_seconds: classification fine-tuning seconds per family.
        finetune_steps: fine-tuning optimizer steps per family instead of seconds.
        block_size: tokens per pre-training example (also the classifier's max length).
        batch_size: examples per batch, for every text family.
        vocab_size: size of each family's tokenizer, trained on the corpus (cached).
        dropout: residual dropout of every text family (null keeps each config's).
        log_every: optimizer steps between the loss-curve points.
        val_batches: validation batches per evaluation (null: the whole validation split).
        impls: attention backends whose training-step time is measured ("triton" needs CUDA).
        timing_steps: timed steps per backend (after one warm-up step); the median is reported.
        device: "auto" (CUDA when present), "cpu" or "cuda". CUDA trains in bf16-mixed precision.
        threads: torch CPU threads (null: torch's default); 1 is fastest for tiny models on a
            shared 2-core machine.
        seed: seed of every run (Lightning's seed_everything), for reproducible results.
        out_dir: folder for the results (default benchmarks/results).
    """
    settings = {k: v for k, v in locals().items()}
    from zoo.compare.architectures import run  # Lightning and the models load on use, not at `zoo` start-up

    return run(settings)


__all__ = ["FAMILIES", "Size", "compare"]
