"""Writing `zoo compare`'s results (`benchmarks/architectures.py`): one CSV row per model, the full JSON (loss curves
included), a markdown table, and PNG plots (loss against tokens and seconds, throughput bars)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

NA = "n/a"
COLUMNS = [
    "family", "objective", "device", "dtype", "non_embedding_params", "total_params", "params_vs_mean",
    "steps", "tokens", "train_seconds", "tokens_per_s", "median_step_ms", "flops_per_token", "mfu",
    "peak_memory_mib", "memory_kind", "final_train_loss", "val_loss", "val_ppl", "finetune_steps",
    "finetune_acc", "finetune_macro_f1", "zero_shot_acc", "step_ms_eager", "step_ms_torch", "step_ms_triton",
    "budget", "seed", "date",
]


def device_tag(environment: dict) -> str:
    """`cpu`, or the GPU's name as a file-name slug (`nvidia-h100-80gb-hbm3`)."""
    if environment["device_type"] != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", environment["device"].lower()).strip("-")


def budget_text(settings: dict) -> str:
    pre = (f"{settings['budget_flops']:.3g} FLOPs" if settings["budget_flops"] is not None
           else f"{settings['budget_seconds']:g} s")
    ft = (f"{settings['finetune_steps']} steps" if settings["finetune_steps"] is not None
          else f"{settings['finetune_seconds']:g} s")
    return f"pre-train {pre}, fine-tune {ft}"


def _row(name: str, pre: dict, ft: dict | None, results: dict) -> dict:
    env, settings = results["environment"], results["settings"]
    curve = pre["curve"]
    return {
        "family": name, "objective": pre["objective"], "device": env["device"], "dtype": env["dtype"],
        "non_embedding_params": pre["non_embedding_params"], "total_params": pre["total_params"],
        "params_vs_mean": pre.get("params_vs_mean"), "steps": pre["steps"], "tokens": pre["tokens"],
        "train_seconds": pre["train_seconds"], "tokens_per_s": pre["tokens_per_s"],
        "median_step_ms": pre["median_step_ms"], "flops_per_token": pre["flops_per_token"], "mfu": pre["mfu"],
        "peak_memory_mib": pre["peak_memory_mib"], "memory_kind": pre["memory_kind"],
        "final_train_loss": curve[-1]["loss"] if curve else None,
        "val_loss": pre["val"].get("loss"), "val_ppl": pre["val"].get("ppl"),
        "finetune_steps": ft["steps"] if ft else None, "finetune_acc": ft["val"].get("acc") if ft else None,
        "finetune_macro_f1": ft["val"].get("macro_f1") if ft else None,
        "zero_shot_acc": pre["val"].get("zero_shot_acc"),
        **{f"step_ms_{impl}": pre["step_ms"].get(impl) for impl in ("eager", "torch", "triton")},
        "budget": budget_text(settings), "seed": settings["seed"], "date": env["date"],
    }


def rows(results: dict) -> list[dict]:
    """One flat row per model: the text families, then CLIP."""
    out = [_row(f, r["pretrain"], r["finetune"], results) for f, r in results["families"].items()]
    if results.get("clip"):
        out.append(_row("clip", results["clip"], None, results))
    return out


def write(results: dict, out_dir: Path) -> dict[str, Path]:
    """architectures-<device>.{json,csv,md} and three PNGs in ``out_dir``; their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"architectures-{device_tag(results['environment'])}"
    paths = {kind: Path(f"{stem}.{kind}") for kind in ("json", "csv", "md")}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows(results))
    paths["md"].write_text(markdown(results))
    paths.update(plots(results, stem))
    return paths


# ---------------------------------------------------------------------------- markdown
def _fmt(value, spec: str = ".3f") -> str:
    if value is None:
        return NA
    return value if isinstance(value, str) else format(value, spec)


def _steps_ms(step_ms: dict) -> str:
    return " | ".join(_fmt(step_ms.get(impl), ".1f") for impl in ("eager", "torch", "triton"))


def mfu_header(environment: dict) -> str:
    return "MFU" if environment["device_type"] == "cuda" else "MFU vs measured matmul peak"


def markdown(results: dict) -> str:
    env, settings = results["environment"], results["settings"]
    peak = results["peak_flops"]
    lines = [
        "# Model families at matched size and budget", "",
        f"{env['device']}, {env['dtype']}, {env['threads']} torch thread(s), torch {env['torch']}, "
        f"lightning {env['lightning']}, {env['date']}; seed {settings['seed']}; {budget_text(settings)} per model; "
        f"batch {settings['batch_size']} × {settings['block_size']} tokens. Load average before/after: "
        f"{results['load_before']} / {results.get('load_after')}.", "",
        "Losses are per target token of each family's own objective and tokenizer (GPT every next token, "
        "BERT the masked tokens, T5 the corrupted spans, BART the whole original text): they do not compare "
        "across rows. The common yardstick is topic-classification accuracy and macro-F1 after the same "
        "fine-tuning budget.", "",
        f"| family | objective | non-emb. params | steps | tokens | tokens/s | {mfu_header(env)} | peak mem (MiB) "
        "| train loss | val loss | val ppl | fine-tune steps | accuracy | macro-F1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    table = rows(results)
    for r in table[: len(results["families"])]:
        lines.append(f"| {r['family']} | {r['objective']} | {r['non_embedding_params']:,} | {r['steps']} | "
                     f"{r['tokens']:,} | {_fmt(r['tokens_per_s'], ',.0f')} | {_fmt(r['mfu'], '.2%')} | "
                     f"{_fmt(r['peak_memory_mib'], '.0f')} | {_fmt(r['final_train_loss'])} | {_fmt(r['val_loss'])} | "
                     f"{_fmt(r['val_ppl'], '.1f')} | {r['finetune_steps']} | {_fmt(r['finetune_acc'])} | "
                     f"{_fmt(r['finetune_macro_f1'])} |")
    kind = table[0]["memory_kind"] if table else ""
    lines += ["", f"MFU: against the {results['peak_kind']}" + (f", {peak / 1e9:,.0f} GFLOP/s" if peak else "")
              + "; FLOPs per step counted by torch's FLOP counter on one forward + backward of a meta-device copy "
              "(`zoo.flops`, as `zoo fit` logs MFU; full score matrices). Tokens: every position the model processes (encoder + decoder, or image "
              f"patches + caption tokens). Peak memory: {kind}. Train loss: the last logged step."]
    if results["families"]:
        lines += ["", "Attention backends: median training-step time in ms (forward, loss, backward, AdamW) on "
                  "one pre-training batch, attention dropout off:", "",
                  "| family | eager | torch | triton |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {f} | {_steps_ms(r['pretrain']['step_ms'])} |" for f, r in results["families"].items()]
    if results.get("clip"):
        c = table[-1]
        lines += ["", "CLIP (configs/clip/tiny.yaml on scikit-learn's digits; its own objective and data):", "",
                  f"| params | steps | tokens/s | {mfu_header(env)} | peak mem (MiB) | val loss | zero-shot acc "
                  "| step ms eager | torch | triton |", "|" + " ---: |" * 10,
                  f"| {c['total_params']:,} | {c['steps']} | {_fmt(c['tokens_per_s'], ',.0f')} "
                  f"| {_fmt(c['mfu'], '.2%')} | {_fmt(c['peak_memory_mib'], '.0f')} | {_fmt(c['val_loss'])} "
                  f"| {_fmt(c['zero_shot_acc'])} "
                  f"| {_steps_ms(results['clip']['step_ms'])} |"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plots
def _curves(ax, runs: dict, x: str, title: str) -> None:
    for name, pre in runs.items():
        points = pre["curve"]
        if points:
            ax.plot([p[x] for p in points], [p["loss"] for p in points], marker=".", label=name)
    ax.set_xlabel({"tokens": "tokens seen", "seconds": "training seconds"}[x])
    ax.set_ylabel("train loss (own objective)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()


def plots(results: dict, stem: Path) -> dict[str, Path]:
    """Loss against tokens and against seconds (text families; CLIP beside them), throughput bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = {f: r["pretrain"] for f, r in results["families"].items()}
    clip = {"clip": results["clip"]} if results.get("clip") else {}
    paths = {}
    for x in ("tokens", "seconds"):
        panels = [p for p in ((text, "text families"), (clip, "CLIP")) if p[0]]
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
        for ax, (runs, title) in zip(axes[0], panels):
            _curves(ax, runs, x, title)
        fig.tight_layout()
        paths[f"loss_{x}"] = Path(f"{stem}-loss-{x}.png")
        fig.savefig(paths[f"loss_{x}"], dpi=110)
        plt.close(fig)
    paths["throughput"] = _throughput_plot(results, {**text, **clip}, Path(f"{stem}-throughput.png"), plt)
    return paths


def _throughput_plot(results: dict, runs: dict, path: Path, plt) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(runs)
    left.bar(names, [runs[n]["tokens_per_s"] or 0 for n in names], color="tab:blue")
    left.set_ylabel("tokens / s (training)")
    left.set_title(f"throughput, {results['environment']['device']}")
    width = 0.8 / 3
    for i, (impl, color) in enumerate((("eager", "tab:gray"), ("torch", "tab:orange"), ("triton", "tab:green"))):
        timed = [(j, runs[n]["step_ms"].get(impl)) for j, n in enumerate(names)]
        timed = [(j, v) for j, v in timed if isinstance(v, (int, float))]  # "n/a (needs CUDA)" has no bar
        if timed:
            right.bar([j + (i - 1) * width for j, _ in timed], [v for _, v in timed], width, label=impl, color=color)
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("training step (ms, median)")
    right.set_title("attention backends" + ("" if results["environment"]["device_type"] == "cuda"
                                            else " (triton: needs CUDA)"))
    right.legend()
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
