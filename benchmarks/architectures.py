"""GPT, BERT, T5 and BART trained side by side from their configs, at matched size and budget, on
whatever device is present; CLIP in a table of its own.

Every family pre-trains on the same corpus (the Python documentation topics every Python install
carries), each with its own objective and tokenizer: GPT next-token prediction (Radford et al.,
2019), BERT masked LM (Devlin et al., 2019), T5 span corruption (Raffel et al., 2020), BART text
infilling with sentence permutation (Lewis et al., 2020). The non-embedding parameter counts are
matched (an encoder-decoder has two stacks, so half the layers each), and every family gets the
same budget of wall-clock seconds or of training FLOPs. Then each fine-tunes on the embedded topic
classification task from its pre-trained weights, for the same budget; its accuracy and macro-F1
are the common yardstick, since the pre-training losses are per target token of different
objectives and tokenizers, and do not compare across families.

Recorded per model: parameters, tokens/s, MFU, peak memory, the training-loss curve (against
tokens and seconds), validation loss and perplexity, fine-tuned accuracy and macro-F1, and the
step time of each attention backend (eager, torch, triton). CLIP (Radford et al., 2021) trains on
scikit-learn's digits with the same budget and reports zero-shot accuracy instead. On a GPU the
runs use bf16-mixed precision, CUDA events time the steps and `torch.cuda.max_memory_allocated`
gives the peak memory; MFU is then against the GPU's datasheet bf16 peak.

    python benchmarks/architectures.py                     # the README figures (7 minutes of budgets + set-up)
    python benchmarks/architectures.py --budget-seconds 20 --finetune-seconds 10 --clip false
    python benchmarks/architectures.py --budget-flops 2e12 --config sizes.yaml   # sizes, budgets from YAML
    zoo compare --help                                     # the same command, every option explained

Writes benchmarks/results/architectures-<device>.{csv,json,md} and PNG plots beside them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
if __name__ == "__main__":  # run as a script: import the repository's packages, not benchmarks/*
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(ROOT))

Family = Literal["gpt", "bert", "t5", "bart"]
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
    families: list[Family] = list(FAMILIES),
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
    if str(ROOT) not in sys.path:  # loaded by path (zoo compare, tests): make `benchmarks` importable
        sys.path.append(str(ROOT))
    from benchmarks import _compare

    return _compare.run(settings)


def _underscored(arg: str) -> str:
    """``--budget-seconds=60`` → ``--budget_seconds=60``, jsonargparse's spelling; values untouched."""
    if not arg.startswith("--"):
        return arg
    key, sep, value = arg[2:].partition("=")
    return "--" + key.replace("-", "_") + sep + value


def main(argv: Optional[list[str]] = None) -> dict:
    """The script's command line: `compare`'s options, spelled --budget-seconds or --budget_seconds."""
    from jsonargparse import CLI

    argv = [_underscored(a) for a in (sys.argv[1:] if argv is None else argv)]
    return CLI(compare, args=argv, as_positional=False, parser_mode="yaml", prog="architectures.py")


if __name__ == "__main__":
    main()
