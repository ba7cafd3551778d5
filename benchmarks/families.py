"""BERT, T5 and BART side by side on the CPU: each family's tiny pre-training for a fixed wall-clock
budget, then fine-tuning on the embedded topic-classification task, from the pre-trained weights
and from scratch.

Pre-training (`configs/<family>/tiny.yaml`, the objectives of Devlin et al. 2019, Raffel et al.
2020 and Lewis et al. 2020): validation loss at step 0 and after the budget, steps, wall-clock
seconds, and the objective's own metrics (masked-token accuracy; BLEU / ROUGE-L of greedy and beam
decodes). The losses are per target token of each family's own objective and tokenizer: compare a
family's before with its after, not one family with another.

Fine-tuning (`configs/<family>/classify.yaml`: which Python documentation topic a paragraph comes
from): accuracy and macro-F1 on the validation paragraphs, at step 0 and after the budget.

Everything runs through the same `ZooCLI` as `zoo fit`, the YAML configs plus a few overrides
(budget, output folder), by the harness `zoo compare` uses (`zoo.compare.harness`; the runs are
`zoo.compare.families`). Runs and checkpoints go to a temporary folder.

    python benchmarks/families.py                      # the README figures (about 12 minutes)
    python benchmarks/families.py --pretrain-seconds 20 --finetune-seconds 10 --families bert

Writes benchmarks/results/families-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # run as a script: import the repository's packages, not benchmarks/*
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

FAMILIES = ("bert", "t5", "bart")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--pretrain-seconds", type=float, default=120.0)
    parser.add_argument("--finetune-seconds", type=float, default=45.0)
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch fine-tuning baseline")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is fastest for tiny models on a shared 2-core machine")
    parser.add_argument("--out", default=str(_HERE / "results"))
    args = parser.parse_args(argv)

    import torch

    from zoo.compare import families

    torch.set_num_threads(args.threads)
    results = families.run(args.families, args.pretrain_seconds, args.finetune_seconds, scratch=not args.no_scratch,
                           progress=lambda record: print(json.dumps(record, indent=1), flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "families-cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "families-cpu.md").write_text(families.markdown(results))
    print(families.markdown(results))
    return results


if __name__ == "__main__":
    main()
