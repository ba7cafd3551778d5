"""ONNX export figures: graph sizes (fp32, int8 via onnxruntime's quantize_dynamic), the int8 graph's
accuracy change, and CPU latency of onnxruntime against the zoo model in torch (median of many runs
after warm-up), for a GPT (nano-sized) logits pass and decoding step and a BERT masked-LM pass.

    .venv/bin/python -m benchmarks.onnx_export [--threads 1] [--runs 50]

Writes benchmarks/results/onnx-export-cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoo.interop.onnx import export_onnx
from zoo.models import GPT, Bert, BertConfig, GPTConfig

RESULTS = Path(__file__).parent / "results"


def median_ms(fn, runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench(name, model, feeds: dict, graph: str, torch_fn, runs: int, threads: int, directory: Path) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    row = {"model": name, "graph": graph, "shapes": {k: list(v.shape) for k, v in feeds.items()}}
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    with torch.no_grad():
        want = torch_fn().numpy()
        row["torch_ms"] = median_ms(torch_fn, runs)
    for kind, file in (("fp32", directory / graph), ("int8", directory / graph.replace(".onnx", ".int8.onnx"))):
        sess = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, np_feeds)[0]
        row[f"{kind}_mb"] = round(file.stat().st_size / 1e6, 3)
        row[f"{kind}_ms"] = median_ms(lambda: sess.run(None, np_feeds), runs)
        row[f"{kind}_max_abs_err"] = float(np.abs(got - want).max())
        if want.ndim == 3:  # logits: how often the int8 graph changes the top-1 token
            row[f"{kind}_top1_agree"] = float((got.argmax(-1) == want.argmax(-1)).mean())
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    gpt = GPT(GPTConfig(vocab_size=4096, max_seq_len=256, d_model=256, n_layer=4, n_head=4)).eval()
    bert = Bert(BertConfig(vocab_size=4096, max_seq_len=256, d_model=256, n_layer=4, n_head=4, dropout=0,
                           attn_dropout=0)).eval()
    B, T, P = 1, 128, 127
    ids = torch.randint(0, 4096, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "gpt"
        export_onnx(gpt, d, quantize=True)
        rows.append(bench("gpt 4x256", gpt, {"input_ids": ids, "attention_mask": mask}, "model.onnx",
                          lambda: gpt(ids, attention_mask=mask), args.runs, args.threads, d))
        L, H, hd = 4, 4, 64
        past = {f"past_{k}_{i}": torch.randn(B, H, P, hd) for i in range(L) for k in ("key", "value")}
        step = {"input_ids": ids[:, :1], "attention_mask": torch.ones(B, P + 1, dtype=torch.long), **past}

        def torch_step():
            from zoo.blocks import KVCache

            cache = KVCache()
            for i in range(L):
                cache.self_kv[i] = (past[f"past_key_{i}"], past[f"past_value_{i}"])
            return gpt(ids[:, :1], attention_mask=step["attention_mask"], past_key_values=cache)

        rows.append(bench("gpt 4x256", gpt, step, "decoder_step.onnx", torch_step, args.runs, args.threads, d))
        d = Path(tmp) / "bert"
        export_onnx(bert, d, quantize=True)
        types = torch.zeros_like(ids)
        rows.append(bench("bert 4x256", bert, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
                          "model.onnx", lambda: bert(ids, mask, types), args.runs, args.threads, d))
    import onnxruntime

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": "cpu",
            "cpu": platform.processor() or platform.machine(), "threads": args.threads, "runs": args.runs,
            "load_average": os.getloadavg(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "dtype": "float32 (int8: dynamic weight quantization, QInt8)", "attention": "torch (sdpa) in torch"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx-export-cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"ONNX export on {meta['cpu']}, {args.threads} thread(s), median of {args.runs} runs, "
             f"load average {', '.join(f'{x:.1f}' for x in meta['load_average'])}, torch {meta['torch']}, "
             f"onnxruntime {meta['onnxruntime']}, {meta['date']}", "",
             "| model | graph | input | fp32 MB | int8 MB | torch ms | ORT fp32 ms | ORT int8 ms | int8 max abs err | int8 top-1 agree |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        shape = "x".join(map(str, r["shapes"]["input_ids"])) + (f", past {P}" if "step" in r["graph"] else "")
        agree = f"{r['int8_top1_agree']:.3f}" if "int8_top1_agree" in r else "-"
        lines.append(f"| {r['model']} | {r['graph']} | {shape} | {r['fp32_mb']:.2f} | {r['int8_mb']:.2f} | "
                     f"{r['torch_ms']:.2f} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | {r['int8_max_abs_err']:.2e} | {agree} |")
    (RESULTS / "onnx-export-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
