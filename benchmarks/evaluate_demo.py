"""The demo GPT before and after a short fine-tune, through `zoo evaluate` (README "Evaluation").

    python benchmarks/evaluate_demo.py [--base-steps 600] [--extra-steps 200] [--out benchmarks/results/evaluate-demo]

1. `zoo fit -c configs/gpt/nano.yaml` (what `make demo` trains; --base-steps optimizer steps);
2. the same run continued from its last.ckpt for --extra-steps more steps (`--ckpt_path`: weights,
   optimizer and schedule resume; the cosine schedule is stretched to the new total);
3. `zoo evaluate` of both: the family metrics on the whole validation split, and the offline harness
   tasks (zoo_pydoc_perplexity, zoo_pydoc_topic) in full.

Writes OUT/eval.{json,csv,png} (from zoo evaluate) and OUT/run.json (steps, wall times, load average,
versions). The machine is shared: load average is recorded before and after each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def zoo(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-steps", type=int, default=600)
    parser.add_argument("--extra-steps", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=20, help="validation interval during the fits (steps)")
    parser.add_argument("--runs", default="runs/evaluate-demo")
    parser.add_argument("--out", default="benchmarks/results/evaluate-demo")
    args = parser.parse_args()
    runs = ROOT / args.runs
    common = ["-c", "configs/gpt/nano.yaml", "--trainer.enable_progress_bar", "false",
              "--trainer.val_check_interval", str(args.val_every), "--trainer.limit_val_batches", "4",
              "--trainer.default_root_dir", str(runs), "--trainer.logger.init_args.save_dir", str(runs)]
    record = {"config": "configs/gpt/nano.yaml", "base_steps": args.base_steps, "extra_steps": args.extra_steps,
              "load_average": {"start": os.getloadavg()}}
    record["fit_base_s"] = zoo("fit", *common, "--trainer.max_steps", str(args.base_steps))
    record["load_average"]["after_base"] = os.getloadavg()
    base = sorted(runs.rglob("last.ckpt"))[-1]
    kept = base.with_name(f"base-{args.base_steps}.ckpt")
    kept.write_bytes(base.read_bytes())  # the resumed run writes its own last.ckpt into the same folder
    total = args.base_steps + args.extra_steps
    record["fit_extra_s"] = zoo("fit", *common, "--trainer.max_steps", str(total), "--ckpt_path", str(kept))
    record["load_average"]["after_extra"] = os.getloadavg()
    tuned = sorted(runs.rglob("last.ckpt"))[-1]
    names = [f"demo-gpt ({args.base_steps} steps)", f"+{args.extra_steps} steps"]
    record["evaluate_s"] = zoo("evaluate", "--model", str(kept), str(tuned), "--names", *names, "--out_dir", args.out)
    record["load_average"]["end"] = os.getloadavg()
    record["checkpoints"] = {names[0]: str(kept.relative_to(ROOT)), names[1]: str(tuned.relative_to(ROOT))}
    record["cpu_count"] = os.cpu_count()
    (ROOT / args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
