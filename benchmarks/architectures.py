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

Writes benchmarks/results/architectures-<device>.{csv,json,md} and PNG plots beside them. The runs
live in the package (`zoo.compare`); this script is their command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # run as a script: import the repository's packages, not benchmarks/*
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))


def _underscored(arg: str) -> str:
    """``--budget-seconds=60`` → ``--budget_seconds=60``, jsonargparse's spelling; values untouched."""
    if not arg.startswith("--"):
        return arg
    key, sep, value = arg[2:].partition("=")
    return "--" + key.replace("-", "_") + sep + value


def main(argv: Optional[list[str]] = None) -> dict:
    """The script's command line: `zoo.compare.compare`'s options, spelled --budget-seconds or --budget_seconds."""
    from jsonargparse import CLI

    from zoo.compare import compare

    argv = [_underscored(a) for a in (sys.argv[1:] if argv is None else argv)]
    return CLI(compare, args=argv, as_positional=False, parser_mode="yaml", prog="architectures.py")


if __name__ == "__main__":
    main()
