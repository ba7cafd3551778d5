"""Compression figures: what quantization (torchao), structured and unstructured pruning, and
distillation cost and buy, measured on the CPU.

GPT (trained here on the embedded pydoc corpus, a nano-sized teacher):
- float32 vs int8 weight-only vs int8 dynamic-activation: parameters, size on disk (safetensors),
  peak resident memory of a fresh process that loads the model and decodes, greedy decode tokens/s
  (batch 1), validation perplexity;
- structured pruning to `--target` of the non-embedding parameters (MLP neurons), before and after a
  short recovery fine-tune; unstructured magnitude pruning of the same share of weights;
- distillation: a half-depth student distilled from the teacher vs the same student from scratch,
  the same steps and batches (wall time of each).

BERT, T5, BART, CLIP (random weights at the tiny configs' sizes): parameters, size on disk, batched
forward latency and the output's relative change for each CPU quantization scheme.

    .venv/bin/python -m benchmarks.compress [--teacher-steps 1200] [--student-steps 300] [--block-size 64]

Writes benchmarks/results/compress-cpu.{json,md,png}. Every figure is measured in this run; the load
average of the (shared) machine is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def env() -> dict:
    import torchao

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "torchao": torchao.__version__,
            "python": platform.python_version(), "load_average": os.getloadavg()}


# ------------------------------------------------------------------------------------------ data
def text_data(block_size: int, batch_size: int):
    from zoo.data import TextDataModule

    dm = TextDataModule(source="pydoc", tokenizer_kind="bpe", vocab_size=512, block_size=block_size,
                        batch_size=batch_size)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def batches(dm, steps: int, seed: int):
    """`steps` training batches, the same sequence for every model trained with the same seed."""
    torch.manual_seed(seed)
    out = []
    while len(out) < steps:
        out.extend(b for b, _ in zip(dm.train_dataloader(), range(steps - len(out))))
    return out


@torch.no_grad()
def val_ppl(model, dm) -> float:
    model.eval()
    total, n = 0.0, 0
    for b in dm.val_dataloader():
        k = int((b["labels"] != -100).sum())
        total += float(model(b["input_ids"], labels=b["labels"])) * k
        n += k
    return math.exp(total / n)


def train(model, data, lr: float = 2e-3, loss_fn=None) -> float:
    """AdamW with 5% warm-up and cosine decay; returns wall seconds."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.1)
    warm = max(1, len(data) // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.1 + 0.45 * (1 + math.cos(
        math.pi * min(1.0, max(0, s - warm) / max(1, len(data) - warm))))))
    model.train()
    start = time.perf_counter()
    for b in data:
        loss = loss_fn(b) if loss_fn else model(b["input_ids"], labels=b["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ measures
def median_s(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def decode_tokens_per_s(model, prompt_len: int = 16, new: int = 48, runs: int = 5) -> float:
    from zoo.generation import generate

    ids = torch.arange(3, 3 + prompt_len)[None]
    model.eval()
    s = median_s(lambda: generate(model, ids, max_new_tokens=new, temperature=0.0), runs)
    return new / s


def save_size(model, folder: Path, scheme: str) -> int:
    """Bytes of model.safetensors as zoo.compress writes it (float models through the same writer)."""
    from zoo.compress.quantize import save_quantized

    save_quantized(model, folder, scheme)
    return (folder / "model.safetensors").stat().st_size


def _peak_child(path: str, kind: str, queue) -> None:
    torch.set_num_threads(1)
    if kind == "quantized":
        from zoo.compress.quantize import load_quantized

        model, _ = load_quantized(path)
    else:
        from zoo.checkpoint import model_from_checkpoint

        model, _ = model_from_checkpoint(path)
    decode_tokens_per_s(model, runs=1)
    queue.put(high_water_mib())


def high_water_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux keeps that across exec, so a spawned
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib(path: Path, kind: str) -> float:
    """Peak resident memory (MiB) of a fresh process that imports torch, loads the model and decodes."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_child, args=(str(path), kind, q))
    p.start()
    value = q.get(timeout=600)
    p.join()
    return value


# ------------------------------------------------------------------------------------------ GPT
def gpt_section(args, tmp: Path) -> dict:
    from zoo.compress import load_quantized, quantize
    from zoo.compress.prune import magnitude_prune, prune_structured, save_checkpoint
    from zoo.models import GPT, GPTConfig
    from zoo.tasks.distillation import Distillation

    dm = text_data(args.block_size, args.batch_size)
    cfg = GPTConfig(vocab_size=dm.model_vocab_size, max_seq_len=args.block_size, d_model=128, n_layer=4, n_head=4)
    torch.manual_seed(0)
    teacher = GPT(cfg)
    teacher_s = train(teacher, batches(dm, args.teacher_steps, seed=1))
    teacher.eval()
    out = {"config": {"d_model": 128, "n_layer": 4, "n_head": 4, "block_size": args.block_size,
                      "batch_size": args.batch_size, "teacher_steps": args.teacher_steps, "teacher_train_s": teacher_s},
           "rows": []}
    save_checkpoint(teacher, tmp / "float.ckpt", dm.tokenizer)

    def row(method, model, size, peak, **extra):
        r = {"method": method, "params": model.num_parameters(non_embedding=False),
             "non_embedding_params": model.num_parameters(non_embedding=True), "disk_mib": size / 2**20,
             "peak_rss_mib": peak, "decode_tok_s": decode_tokens_per_s(model), "val_ppl": val_ppl(model, dm), **extra}
        out["rows"].append(r)
        print(json.dumps(r), flush=True)

    row("float32", teacher, save_size(teacher, tmp / "f32", "none"), peak_rss_mib(tmp / "float.ckpt", "ckpt"))
    for scheme in ("int8-weight", "int8-dynamic"):
        q = GPT(cfg)
        q.load_state_dict(teacher.state_dict())
        quantize(q, scheme)
        size = save_size(q, tmp / scheme, scheme)
        q, _ = load_quantized(tmp / scheme)
        row(scheme, q, size, peak_rss_mib(tmp / scheme, "quantized"))

    small = prune_structured(teacher, args.target)
    save_checkpoint(small, tmp / "pruned.ckpt")
    row(f"structured {args.target:.0%}", small, save_size(small, tmp / "pruned", "none"),
        peak_rss_mib(tmp / "pruned.ckpt", "ckpt"))
    rec_s = train(small, batches(dm, args.recovery_steps, seed=3), lr=5e-4)
    save_checkpoint(small, tmp / "pruned-rec.ckpt")
    row(f"structured {args.target:.0%} + {args.recovery_steps}-step recovery", small,
        save_size(small, tmp / "pruned-rec", "none"), peak_rss_mib(tmp / "pruned-rec.ckpt", "ckpt"), train_s=rec_s)

    sparse = GPT(cfg)
    sparse.load_state_dict(teacher.state_dict())
    sparsity = magnitude_prune(sparse, 1 - args.target)
    save_checkpoint(sparse, tmp / "sparse.ckpt")
    row(f"unstructured {sparsity:.0%} zeros", sparse, save_size(sparse, tmp / "sparse", "none"),
        peak_rss_mib(tmp / "sparse.ckpt", "ckpt"))

    # distillation: half-depth student, same batches and steps, distilled vs from scratch
    scfg = GPTConfig(**{**cfg.__dict__, "n_layer": 2})
    data = batches(dm, args.student_steps, seed=2)
    torch.manual_seed(5)
    scratch = GPT(scfg)
    scratch_s = train(scratch, data)
    torch.manual_seed(5)
    student = GPT(scfg)
    task = Distillation(student, teacher=teacher, alpha=args.alpha, temperature=args.temperature,
                        init_from_teacher=args.init_from_teacher)
    distil_s = train(student, data, loss_fn=lambda b: task.loss(b)[0])
    for name, m, s in (("student from scratch", scratch, scratch_s), ("student distilled", student, distil_s)):
        save_checkpoint(m, tmp / "s.ckpt")
        row(f"{name} ({args.student_steps} steps)", m, save_size(m, tmp / name.replace(" ", "-"), "none"),
            peak_rss_mib(tmp / "s.ckpt", "ckpt"), train_s=s)
    out["distillation"] = {"alpha": args.alpha, "temperature": args.temperature,
                           "init_from_teacher": args.init_from_teacher, "steps": args.student_steps}
    return out


# ------------------------------------------------------------------------------------------ encoders
def encoder_section(tmp: Path) -> list[dict]:
    from zoo.compress import quantize
    from zoo.models import CLIP, Bart, BartConfig, Bert, BertConfig, CLIPConfig, T5, T5Config
    from zoo.models.base import ImageTextModel, MaskedLMModel, Seq2SeqModel
    from zoo.models.clip import CLIPTextConfig, CLIPVisionConfig

    builds = {
        "bert": lambda: Bert(BertConfig(vocab_size=2048, max_seq_len=128, d_model=256, n_layer=4, n_head=4)),
        "t5": lambda: T5(T5Config(vocab_size=2048, d_model=256, d_kv=64, d_ff=1024, n_layer=4, n_head=4)),
        "bart": lambda: Bart(BartConfig(vocab_size=2048, max_seq_len=128, d_model=256, n_layer=4, n_head=4, d_ff=1024)),
        "clip": lambda: CLIP(CLIPConfig(vocab_size=2048, projection_dim=128,
                                        vision=CLIPVisionConfig(image_size=32, patch_size=4, d_model=256, n_layer=4,
                                                                n_head=4),
                                        text=CLIPTextConfig(max_seq_len=32, d_model=256, n_layer=4, n_head=4,
                                                            eos_token_id=2047))),
    }
    g = torch.Generator().manual_seed(0)
    ids, pixels = torch.randint(3, 2047, (8, 64), generator=g), torch.randn(8, 3, 32, 32, generator=g)

    def forward(m):
        with torch.no_grad():
            if isinstance(m, MaskedLMModel):
                return m(ids)
            if isinstance(m, Seq2SeqModel):
                return m(ids, decoder_input_ids=ids[:, :32])
            assert isinstance(m, ImageTextModel)
            return torch.cat([m.encode_image(pixels), m.encode_text(ids[:, :32])], 1)

    rows = []
    for family, build in builds.items():
        torch.manual_seed(0)
        ref_model = build().eval()
        ref = forward(ref_model)
        for scheme in ("float32", "int8-weight", "int8-dynamic"):
            m = build().eval()
            m.load_state_dict(ref_model.state_dict())
            if scheme != "float32":
                quantize(m, scheme)
            got = forward(m)
            r = {"family": family, "method": scheme, "params": m.num_parameters(non_embedding=False),
                 "disk_mib": save_size(m, tmp / f"{family}-{scheme}", scheme if scheme != "float32" else "none") / 2**20,
                 "forward_ms_batch8": 1e3 * median_s(lambda: forward(m), runs=10),
                 "output_rel_change": float((got - ref).norm() / ref.norm())}
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


# ------------------------------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    e, g = result["env"], result["gpt"]
    lines = [f"# Compression on the CPU ({e['date']})", "",
             f"{e['device']}, {e['cpus']} CPUs, {e['threads']} torch thread(s), torch {e['torch']}, torchao {e['torchao']}; "
             f"load average at start {tuple(round(x, 1) for x in e['load_average'])}, at end "
             f"{tuple(round(x, 1) for x in result['load_average_end'])} (a shared machine: timings are noisy).", "",
             f"GPT teacher: d_model 128, 4 layers, block {g['config']['block_size']}, trained "
             f"{g['config']['teacher_steps']} steps of batch {g['config']['batch_size']} on pydoc "
             f"({g['config']['teacher_train_s']:.0f} s).", "",
             "| method | params | non-emb. params | disk MiB | peak RSS MiB | decode tok/s | val ppl | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in g["rows"]:
        lines.append(f"| {r['method']} | {r['params']:,} | {r['non_embedding_params']:,} | {r['disk_mib']:.3f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['decode_tok_s']:.1f} | {r['val_ppl']:.3f} | "
                     f"{r.get('train_s', float('nan')):.0f} |")
    lines += ["", "Encoders (random weights, batch 8 × 64 tokens; CLIP: 8 images 32×32 + 8 captions):", "",
              "| family | method | params | disk MiB | forward ms | output rel. change |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in result["encoders"]:
        lines.append(f"| {r['family']} | {r['method']} | {r['params']:,} | {r['disk_mib']:.3f} | "
                     f"{r['forward_ms_batch8']:.1f} | {r['output_rel_change']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["gpt"]["rows"]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        ax[0].scatter(r["disk_mib"], r["val_ppl"])
        ax[0].annotate(r["method"], (r["disk_mib"], r["val_ppl"]), fontsize=7)
        ax[1].scatter(r["decode_tok_s"], r["val_ppl"])
        ax[1].annotate(r["method"], (r["decode_tok_s"], r["val_ppl"]), fontsize=7)
    ax[0].set(xlabel="size on disk (MiB)", ylabel="validation perplexity", title="GPT: size vs quality")
    ax[1].set(xlabel="greedy decode tokens/s (batch 1, CPU)", ylabel="validation perplexity", title="GPT: speed vs quality")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher-steps", type=int, default=3000)
    p.add_argument("--student-steps", type=int, default=800)
    p.add_argument("--recovery-steps", type=int, default=200)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--target", type=float, default=0.7)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--init-from-teacher", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="compress-cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = {"env": env(), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        result["encoders"] = encoder_section(Path(tmp))
        result["gpt"] = gpt_section(args, Path(tmp))
    result["load_average_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    plot(result, RESULTS / f"{args.name}.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
