"""One report for all evaluated models: a console table (models as rows, metrics as columns), `eval.json`
(scores plus what produced them: sources, settings, versions, device, date), `eval.csv`, and with
several models a bar chart `eval.png` (one panel per metric, models side by side)."""

from __future__ import annotations

import csv
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

Scores = dict[str, dict[str, float]]  # model name → {"task/metric": value}


def environment(device: str) -> dict[str, Any]:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("lm_eval", "torchmetrics", "lightning"):
        try:
            from importlib.metadata import version

            versions[package] = version(package.replace("_", "-"))
        except Exception:  # noqa: BLE001  (not installed)
            pass
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine() or "cpu"
    return {"device": device, "device_name": name, "threads": torch.get_num_threads(), "versions": versions,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def columns(scores: Scores) -> list[str]:
    seen: dict[str, None] = {}
    for row in scores.values():
        seen.update(dict.fromkeys(row))
    return list(seen)


def _fmt(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—" if value is None else str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def print_table(scores: Scores) -> None:
    """Metrics as rows, models as columns: side by side, however many metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="zoo evaluate")
    table.add_column("metric")
    for name in scores:
        table.add_column(name, justify="right")
    for col in columns(scores):
        table.add_row(col, *(_fmt(row.get(col)) for row in scores.values()))
    Console(width=max(100, 40 + 18 * len(scores))).print(table)


def write_files(scores: Scores, meta: dict, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = columns(scores)
    (out / "eval.json").write_text(json.dumps({"scores": scores, **meta}, indent=2) + "\n")
    with open(out / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", *cols])
        for name, row in scores.items():
            writer.writerow([name, *(row.get(col, "") for col in cols)])
    files = [out / "eval.json", out / "eval.csv"]
    if len(scores) > 1:
        png = plot(scores, out / "eval.png")
        files += [png] if png else []
    return files


def plot(scores: Scores, path: Path) -> Path | None:
    """Bars per metric, models side by side; None (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: no bar chart (pip install matplotlib, or zoo[plots])")
        return None
    cols = columns(scores)
    if not cols:
        return None
    n = len(cols)
    per_row = min(n, 4)
    fig, axes = plt.subplots(math.ceil(n / per_row), per_row, figsize=(3.2 * per_row, 2.8 * math.ceil(n / per_row)),
                             squeeze=False)
    names = list(scores)
    for ax, col in zip(axes.flat, cols):
        have = [i for i, m in enumerate(names) if isinstance(scores[m].get(col), (int, float))]  # models with it
        values = [scores[names[i]][col] for i in have]
        ax.bar(range(len(have)), values, color=[f"C{i}" for i in have])
        ax.set_title(col, fontsize=8)
        ax.set_xticks(range(len(have)), [names[i] for i in have], rotation=30, ha="right", fontsize=7)
        if values and min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
