"""Everything that needs a GPU, in one command and at most ~8 minutes: `make gpu-check`.

Made for the short GPU loans this project gets: run it first, commit the results it writes.

1. the tests marked `gpu` (`pytest -m gpu`);
2. a reduced kernel benchmark (benchmarks/kernel_bench.py): attention forward and backward, causal, at
   sequence 2k and 8k, head dims 64 and 128, bf16, against every SDPA backend and compiled
   FlexAttention; the ALiBi and T5 variants against FlexAttention and SDPA with a bias; the norms
   at M·N = 16M (4096 × 4096);
3. one short `zoo fit` per family on configs/trainer/gpu.yaml with attn_impl and norm_impl
   `triton` (and attention dropout 0, without which attention falls back to torch), and GPT on the
   FSDP2 config (configs/trainer/gpu-fsdp.yaml) on one GPU: these run side by side, after the
   benchmarks, so they never disturb a timing.

Each step runs in its own process under a time limit cut from the overall budget, so a hang
costs its own minutes only. Writes benchmarks/results/kernels-gpu-check-*-<device>.{csv,json,png}
and gpu-check-<device>.{json,md}, and prints one summary table. Without CUDA it says so and exits 0.

It runs with the GPU machine's own Python (torch, triton, lightning) from the repository root,
no install needed; a package missing there (jsonargparse, say, for `zoo fit`) skips what needs it
with one line, and can be carried as a wheel (README, "Kernels").

    python benchmarks/gpu_check.py [--budget 480] [--only tests bench fit] [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NO_GPU_MESSAGE = "gpu-check needs a CUDA GPU; none here, nothing to do"
FAMILIES = {"gpt": "configs/gpt/nano.yaml", "bert": "configs/bert/tiny.yaml", "t5": "configs/t5/tiny.yaml",
            "bart": "configs/bart/tiny.yaml", "clip": "configs/clip/tiny.yaml"}
MODEL_CONFIG = "--model.init_args.model.init_args.config"
FIT_STEPS = 30
GROUPS = ("tests", "bench", "fit")


@dataclass
class Step:
    name: str
    group: str  # tests | bench | fit
    cmd: list[str]
    budget_s: float  # its share of the overall budget
    needs: tuple[str, ...] = ()  # importable modules it cannot run without
    parallel: bool = False  # may run beside the other parallel steps (fits: never timed)
    run_dir: str = ""  # a fit's output folder: its last logged training loss goes in the summary
    result: dict = field(default_factory=dict)


def _bench(tag: str, budget_s: float, *args: str) -> list[str]:
    # the benchmark stops starting new shapes at 80% of its budget, so it always writes what it measured
    return [sys.executable, "benchmarks/kernel_bench.py", "--tag", tag, "--rep", "20", "--time-limit",
            f"{0.8 * budget_s:.0f}", *args]


def _fit(configs: list[str], run_dir: str) -> list[str]:
    cmd = [sys.executable, "-m", "zoo.cli", "fit"]
    for c in configs:
        cmd += ["-c", str(ROOT / c)]
    # attention dropout 0: the kernel has no dropout, and attention with dropout falls back to torch
    return cmd + [f"{MODEL_CONFIG}.attn_impl", "triton", f"{MODEL_CONFIG}.norm_impl", "triton",
                  f"{MODEL_CONFIG}.attn_dropout", "0.0",
                  "--trainer.max_steps", str(FIT_STEPS), "--trainer.val_check_interval", "20",
                  "--trainer.limit_val_batches", "2", "--trainer.default_root_dir", run_dir,
                  "--trainer.logger.init_args.save_dir", run_dir]


def plan(args) -> list[Step]:
    """The steps, in order, with their shares of the budget (fractions sum to 1)."""
    b = args.budget
    impls = ["ours", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "flex"]
    attention = ["--what", "attention", "--dtype", "bf16", "--seq", "2048", "8192", "--head-dim", "64", "128",
                 "--mode", "fwd", "bwd"]
    steps = [
        Step("pytest -m gpu", "tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                        "tests"], 0.22 * b, needs=("pytest",)),
        Step("attention causal", "bench", _bench("gpu-check-attention", 0.28 * b, *attention, "--variant", "causal",
                                                 "--impl", *impls), 0.28 * b),
        Step("attention alibi/t5", "bench", _bench("gpu-check-bias", 0.2 * b, *attention, "--variant", "alibi", "t5",
                                                   "--impl", "ours", "sdpa-efficient", "flex"), 0.2 * b),
        Step("norms 4096x4096", "bench", _bench("gpu-check-norms", 0.06 * b, "--what", "norms", "--dtype", "bf16",
                                                "--hidden", "4096", "--norm-rows", "4096"), 0.06 * b),
    ]
    run_root = tempfile.mkdtemp(prefix="gpu-check-")
    fit_needs = ("lightning", "jsonargparse", "tokenizers", "torchmetrics")
    for family, config in FAMILIES.items():
        run_dir = f"{run_root}/{family}"
        steps.append(Step(f"zoo fit {family}", "fit", _fit([config, "configs/trainer/gpu.yaml"], run_dir),
                          0.24 * b, fit_needs, True, run_dir))
    run_dir = f"{run_root}/fsdp"
    steps.append(Step("zoo fit gpt fsdp2", "fit", _fit(["configs/gpt/nano.yaml", "configs/trainer/gpu-fsdp.yaml"],
                                                        run_dir) + ["--trainer.devices", "1"], 0.24 * b, fit_needs,
                      True, run_dir))
    return [s for s in steps if s.group in args.only]


def missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said explicitly
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env.pop("TRITON_INTERPRET", None)
    return env


def outcome(rc: int | None, seconds: float, log: str, timed_out: bool) -> dict:
    """Status and a one-line detail of a finished step, from its exit code and the end of its log."""
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    last = lines[-1][:160] if lines else ""
    if timed_out:
        status = "timeout"
    elif rc == 0:
        status = "ok"
    else:
        status = "FAIL"
    for ln in reversed(lines):  # pytest's tally is the best one-line detail a test run has
        if (" passed" in ln or " failed" in ln or " skipped" in ln) and (" in " in ln):
            last = ln.strip("= ")[:160]
            break
    return dict(status=status, rc=rc, seconds=round(seconds, 1), detail=last)


def _launch(step: Step, log_dir: Path):
    log = open(log_dir / f"{step.name.replace(' ', '_').replace('/', '-')}.log", "w+")
    proc = subprocess.Popen(step.cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log


def _finish(step: Step, proc, log, start: float, deadline: float) -> None:
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, 9)  # the step's own process group: its workers go too
        proc.wait()
    log.seek(0)
    text = log.read()
    log.close()
    step.result = outcome(proc.returncode, time.time() - start, text, timed_out)
    step.result["log_tail"] = text[-3000:]
    loss = last_train_loss(step.run_dir) if step.run_dir else None
    if loss is not None and step.result["status"] == "ok":
        step.result["detail"] = f"step {loss[0]}: train loss {loss[1]:.4f}"


def last_train_loss(run_dir: str) -> tuple[int, float] | None:
    """(step, loss) of the last training loss a fit's CSV logger wrote under run_dir, if any."""
    import csv

    last = None
    for path in sorted(Path(run_dir).glob("**/metrics.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = next((k for k in ("train/loss", "train/loss_step", "train_loss") if row.get(k)), None)
                if key:
                    last = (int(float(row.get("step") or 0)), float(row[key]))
    return last


def run_steps(steps: list[Step], deadline: float, log_dir: Path, emit=print) -> None:
    """Run the serial steps in order, then the parallel ones together; each stops at its budget or
    at the deadline, whichever comes first."""
    serial = [s for s in steps if not s.parallel]
    parallel = [s for s in steps if s.parallel]
    for batch in [[s] for s in serial] + ([parallel] if parallel else []):
        started = []
        for step in batch:
            gone = missing(step.needs)
            if gone:
                step.result = dict(status="skipped", rc=None, seconds=0.0, detail=f"{', '.join(gone)} not installed")
                emit(f"skip {step.name}: {', '.join(gone)} not installed (carry it as a wheel: README, Kernels)")
                continue
            if time.time() >= deadline:
                step.result = dict(status="skipped", rc=None, seconds=0.0, detail="out of time")
                continue
            emit(f"run  {step.name}")
            started.append((step, *_launch(step, log_dir), time.time()))
        for step, proc, log, start in started:
            _finish(step, proc, log, start, min(deadline, start + step.budget_s))
            emit(f"     {step.name}: {step.result['status']} in {step.result['seconds']} s  {step.result['detail']}")


def summary_table(steps: list[Step]) -> str:
    rows = [("step", "status", "seconds", "detail")]
    rows += [(s.name, s.result.get("status", "-"), str(s.result.get("seconds", "-")), s.result.get("detail", ""))
             for s in steps]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths) + "  " + "-" * 6, *lines[1:]]) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_results(steps: list[Step], meta: dict, out_dir: Path) -> list[Path]:
    """gpu-check-<device>.json (meta, each step's command, result and log tail) and .md (the table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"gpu-check-{_slug(meta['device'])}"
    record = dict(meta, steps=[dict(name=s.name, group=s.group, cmd=s.cmd, **s.result) for s in steps])
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    header = (f"# gpu-check on {meta['device']} ({meta['date']})\n\ntorch {meta['torch']}, triton {meta['triton']}, "
              f"CUDA {meta.get('cuda')}; {meta.get('seconds')} s of a {meta.get('budget')} s budget.\n\n")
    stem.with_suffix(".md").write_text(header + "```\n" + summary_table(steps) + "```\n")
    return [stem.with_suffix(".json"), stem.with_suffix(".md")]


def environment(device: str) -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    return dict(device=device, torch=torch.__version__, triton=triton_version, cuda=torch.version.cuda,
                date=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def parse_args(argv):
    p = argparse.ArgumentParser(description="Run every GPU check (tests, kernel benchmark, one fit per family, "
                                            "FSDP2) within a time budget and write the results.")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default 8 minutes)")
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="run only these groups")
    p.add_argument("--out", type=Path, default=RESULTS, help="where gpu-check-<device>.{json,md} go")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their budgets, run nothing")
    args = p.parse_args(argv)
    if args.budget < 60:
        p.error(f"--budget {args.budget:g} s is too short to run anything useful (at least 60)")
    return args


def main(argv=None, cuda_available=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    steps = plan(args)
    if args.dry_run:
        for s in steps:
            print(f"{s.name:<22} {s.budget_s:>5.0f} s  {' '.join(s.cmd)}")
        return 0
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        print(NO_GPU_MESSAGE)
        return 0
    import torch

    start = time.time()
    meta = environment(torch.cuda.get_device_name())
    print(f"{meta['device']}  torch {meta['torch']}  triton {meta['triton']}  budget {args.budget:.0f} s")
    with tempfile.TemporaryDirectory(prefix="gpu-check-logs-") as log_dir:
        run_steps(steps, start + args.budget, Path(log_dir))
    meta.update(seconds=round(time.time() - start, 1), budget=args.budget)
    table = summary_table(steps)
    for path in write_results(steps, meta, args.out):
        print(f"wrote {path}")
    print("\n" + table)
    return 0 if all(s.result.get("status") in ("ok", "skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
