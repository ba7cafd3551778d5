"""The data report of a prepared folder: what every stage kept and removed, and why.

Read from datatrove's per-task statistics (``logs/<stage>/stats/NNNNN.json``, summed here so a
resumed run reports the whole corpus) and from the documents each filter set aside
(``work/removed/<filter>/``, a few shown as examples). Writes ``report.md`` and
``report/*.png`` (with matplotlib) beside the shards and returns the console summary.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

from zoo.errors import ZooError

STAGES = ("filter", "minhash-buckets", "minhash-clusters", "tokenize")
EXAMPLES = 3
EXAMPLE_CHARS = 160


def stage_stats(out: Path, stage: str) -> list[tuple[str, dict[str, float]]]:
    """[(step name, {stat: total over every task})] of one stage, in pipeline order."""
    files = sorted((out / "logs" / stage / "stats").glob("*.json"))
    steps: dict[str, dict[str, float]] = {}
    for file in files:
        for step in json.loads(file.read_text()):
            totals = steps.setdefault(step["name"], defaultdict(float))
            for key, value in step.get("stats", {}).items():
                totals[key] += value["total"] if isinstance(value, dict) else value
                if isinstance(value, dict) and key == "doc_len":
                    totals["docs_with_len"] += value.get("n", 0)
    return [(name, dict(stats)) for name, stats in steps.items()]


def find(steps: list[tuple[str, dict]], mark: str) -> dict[str, float]:
    return next((stats for name, stats in steps if mark in name), {})


def removed_examples(out: Path, name: str) -> list[str]:
    texts: list[str] = []
    for file in sorted((out / "work" / "removed" / name).glob("*.jsonl.gz")):
        with gzip.open(file, "rt", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                reason = (record.get("metadata") or {}).get("filter_reason", "")
                text = " ".join(record["text"].split())[:EXAMPLE_CHARS]
                texts.append(f"{'[' + reason + '] ' if reason else ''}{text}")
                if len(texts) == EXAMPLES:
                    return texts
    return texts


def histogram(stats: dict[str, float], prefix: str) -> list[tuple[int, int]]:
    """(2^k, count) pairs of the log2 bins ``prefix_kk``."""
    bins = sorted((int(k[len(prefix):]), int(v)) for k, v in stats.items() if k.startswith(prefix))
    return [(2**k, n) for k, n in bins]


def collect(out: Path) -> dict:
    """Every figure of the report, as plain data."""
    if not (out / "logs" / "filter").is_dir():
        raise ZooError(f"{out} holds no pipeline run (no logs/filter); run `zoo data prepare` into it first")
    first, last = stage_stats(out, "filter"), stage_stats(out, "tokenize")
    rows = []
    for name, stats in first + last:
        if "READER" in name and "Jsonl" in name and rows:
            continue  # the tokenize stage re-reads stage 1's output: not new input
        split_docs = stats.get("docs_train", 0) + stats.get("docs_val", 0)
        docs_in = stats.get("total") or stats.get("docs") or split_docs or stats.get("docs_with_len", 0)
        docs_out = stats.get("forwarded", docs_in)
        reasons = {k.removeprefix("dropped_"): int(v) for k, v in stats.items() if k.startswith("dropped_")}
        rows.append({"step": name, "docs_in": int(docs_in), "docs_out": int(docs_out),
                     "dropped": int(stats.get("dropped", 0)), "reasons": reasons,
                     "chars_out": int(stats.get("doc_len", stats.get("chars", 0)))})
    pii = {k.removeprefix("pii_"): int(v) for k, v in find(first, "PII").items() if k.startswith("pii_")}
    docs = find(last, "doc stats")
    tokens = find(last, "zoo shards")
    clusters = sorted((int(k.removeprefix("cluster_size_")), int(v)) for k, v in docs.items()
                      if k.startswith("cluster_size_"))
    examples = {d.name: removed_examples(out, d.name) for d in sorted((out / "work" / "removed").glob("*"))}
    return {
        "rows": rows, "pii": pii, "clusters": clusters, "examples": examples,
        "chars_in": int(find(first, "normalize").get("chars_in", 0)),
        "chars_hist": histogram(docs, "chars_bin_"), "tokens_hist": histogram(tokens, "tokens_bin_"),
        "tokens": {s: int(tokens.get(f"tokens_{s}", 0)) for s in ("train", "val")},
        "docs": {s: int(tokens.get(f"docs_{s}", 0)) for s in ("train", "val")},
    }


def markdown(data: dict, plots: list[str]) -> str:
    lines = ["# Data report", "", "## Stages", "", "| step | docs in | docs out | dropped | chars out | why |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in data["rows"]:
        why = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['step']} | {r['docs_in']:,} | {r['docs_out']:,} | {r['dropped']:,} | "
                     f"{r['chars_out']:,} | {why} |")
    lines += ["", "## Removed documents (first examples)", ""]
    for name, texts in data["examples"].items():
        lines.append(f"- **{name}**" + ("" if texts else ": none"))
        lines += [f"  - `{t.replace('`', '')}`" for t in texts]
    lines += ["", "## Near-duplicate clusters", "", "| cluster size | clusters |", "| ---: | ---: |"]
    lines += [f"| {size} | {n:,} |" for size, n in data["clusters"]] or ["| - | 0 |"]
    lines += ["", "## PII replaced", "", "| kind | replacements |", "| --- | ---: |"]
    lines += [f"| {kind} | {n:,} |" for kind, n in sorted(data["pii"].items())] or ["| - | 0 |"]
    lines += ["", "## Output", "", f"- train: {data['docs']['train']:,} documents, {data['tokens']['train']:,} tokens",
              f"- val: {data['docs']['val']:,} documents, {data['tokens']['val']:,} tokens", ""]
    for title, key in (("Document length (characters)", "chars_hist"), ("Document length (tokens)", "tokens_hist")):
        lines += [f"### {title}", "", "| from | documents |", "| ---: | ---: |"]
        lines += [f"| {lo:,} | {n:,} |" for lo, n in data[key]] + [""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot(data: dict, folder: Path) -> list[str]:
    """PNG histograms (lengths, tokens, cluster sizes); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("data: report plots skipped (needs matplotlib: `pip install zoo[plots]`)")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for key, title, log_x in (("chars_hist", "document length (characters)", True),
                              ("tokens_hist", "document length (tokens)", True),
                              ("clusters", "near-duplicate cluster size", False)):
        pairs = data[key]
        if not pairs:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        xs, ys = zip(*pairs)
        ax.bar([str(x) for x in xs], ys)
        ax.set_xlabel(("from " if log_x else "") + title)
        ax.set_ylabel("documents" if log_x else "clusters")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        fig.tight_layout()
        name = f"report/{key}.png"
        fig.savefig(folder.parent / name, dpi=100)
        plt.close(fig)
        made.append(name)
    return made


def summary(data: dict, out: Path) -> str:
    """One screen for the console."""
    lines = [f"data report: {out / 'report.md'}"]
    for r in data["rows"]:
        why = ", ".join(f"{k} {v:,}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"  {r['step'][:40]:<40} {r['docs_in']:>10,} -> {r['docs_out']:>10,}" + (f"  ({why})" if why else ""))
    pii = ", ".join(f"{k} {v:,}" for k, v in sorted(data["pii"].items())) or "none"
    removed = sum((size - 1) * n for size, n in data["clusters"])
    lines += [f"  near-duplicate clusters: {sum(n for _, n in data['clusters']):,} ({removed:,} documents removed)",
              f"  PII replaced: {pii}",
              f"  shards: train {data['tokens']['train']:,} tokens / {data['docs']['train']:,} docs, "
              f"val {data['tokens']['val']:,} tokens / {data['docs']['val']:,} docs"]
    return "\n".join(lines)


def write_report(output: str) -> str:
    out = Path(output).expanduser()
    data = collect(out)
    plots = plot(data, out / "report")
    (out / "report.md").write_text(markdown(data, plots))
    (out / "report.json").write_text(json.dumps(data, indent=2))
    return summary(data, out)
