"""Serving benchmark: a bounded load test against `zoo serve` on 127.0.0.1, and the zoo decoding loop
against Hugging Face `generate` on the same weights.

1. Load test. One small random GPT (`zoo.from_hf` of a random GPT-2 built offline), served by
   `python -m zoo.cli serve` in a subprocess; a fixed set of requests (fixed prompts of 8 tokens,
   `max_tokens` fixed, greedy, no eos in the vocabulary so every request runs to its length) sent
   as streams at concurrency 1, 4 and 16, with batching on (`--max_batch_size 16`) and off (1).
   Reported: requests/s, output tokens/s, p50/p99 latency, p50 time to first token; the settings are
   interleaved over `--rounds` rounds (both servers up, one loaded at a time) and the median round kept.
2. Decoding loop. `zoo.generation.generate` (KV cache, greedy) against `transformers`'
   `model.generate(do_sample=False, use_cache=True)` on the same weights and prompts, batch 1 and
   8: median tokens/s over repeats (the two interleaved) after a warm-up; the tokens are checked to be
   equal.

    python benchmarks/serve.py [--requests 32] [--max_tokens 32] [--quick]

Writes benchmarks/results/serve.{json,md} and serve.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
VOCAB, D, LAYERS, HEADS, CONTEXT, PROMPT = 512, 128, 4, 4, 256, 8
# One torch thread in both processes: on a shared machine, OpenMP's barriers between two threads cost
# more than they save for a model this small (measured: 8 vs 107 tokens/s at load ~10 on 2 cores).
THREADS = 1


def build_model(folder: Path):
    """A random GPT-2 (HF, saved offline) with a word-level tokenizer without eos, and both models."""
    import torch
    import transformers
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    import zoo
    from zoo.blocks.attention import set_attention_impl

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=CONTEXT, n_embd=D, n_layer=LAYERS, n_head=HEADS,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                  eos_token_id=None)
    hf = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa").eval()
    hf.save_pretrained(folder)
    tok = Tokenizer(WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    ours = set_attention_impl(zoo.from_hf(folder).eval(), "torch")
    return hf, ours


def prompts(n: int) -> list[str]:
    return [" ".join(f"w{(31 * i + 7 * j) % (VOCAB - 1) + 1}" for j in range(PROMPT)) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "serve", "--model", str(folder), "--model_name", "bench",
                             "--port", str(port), "--max_batch_size", str(batch), "--log_file", "null",
                             "--feedback_file", str(folder / "feedback.jsonl")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    import httpx2 as httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except Exception:  # noqa: BLE001 — not up yet
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("zoo serve did not start in 120 s")


async def one(client, url: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0].get("text"):
                first = time.perf_counter()
    end = time.perf_counter()
    return {"latency": end - start, "ttft": (first or end) - start, "tokens": tokens}


async def load(url: str, concurrency: int, n: int, max_tokens: int) -> dict:
    import httpx2 as httpx

    todo = list(prompts(n))
    results = []

    async def worker(client):
        while todo:
            results.append(await one(client, url, todo.pop(0), max_tokens))

    async with httpx.AsyncClient(timeout=300) as client:
        await one(client, url, "w1 w2", 2)  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = sorted(r["latency"] for r in results)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    return {"concurrency": concurrency, "requests": n, "max_tokens": max_tokens, "wall_s": wall,
            "requests_per_s": n / wall, "tokens_per_s": sum(r["tokens"] for r in results) / wall,
            "p50_latency_s": q(0.5), "p99_latency_s": q(0.99),
            "p50_ttft_s": statistics.median(r["ttft"] for r in results)}


def decoding_loop(hf, ours, batch: int, new: int, repeats: int) -> dict:
    import torch

    from zoo.generation import generate

    ids = torch.tensor([[int(w[1:]) for w in p.split()] for p in prompts(batch)])
    mask = torch.ones_like(ids)

    def run_hf():
        return hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                           use_cache=True, pad_token_id=0, eos_token_id=None, num_beams=1)

    def run_zoo():
        return generate(ours, ids, max_new_tokens=new, temperature=0)

    times = {"hf": [], "zoo": []}
    with torch.inference_mode():
        same = torch.equal(run_hf(), run_zoo())  # also the warm-up
        for _ in range(repeats):  # interleaved, so a change in the machine's load hits both alike
            for name, fn in (("hf", run_hf), ("zoo", run_zoo)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    out = {name: batch * new / statistics.median(ts) for name, ts in times.items()}
    return {"batch": batch, "new_tokens": new, "prompt_tokens": PROMPT, "hf_tokens_per_s": out["hf"],
            "zoo_tokens_per_s": out["zoo"], "speedup": out["zoo"] / out["hf"], "same_tokens": same}


def environment() -> dict:
    import fastapi
    import torch
    import transformers
    import uvicorn

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__, "torch_threads": torch.get_num_threads(),
            "model": f"GPT-2 shape, random weights: vocab {VOCAB}, d_model {D}, {LAYERS} layers, {HEADS} heads, "
                     f"fp32, attention impl torch (SDPA) in both"}


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# zoo serve benchmark — {env['date']}", "",
             f"{env['machine']}; torch {env['torch']}, transformers {env['transformers']}, fastapi {env['fastapi']}, "
             f"uvicorn {env['uvicorn']}; load average before {res['load_before']}, after {res['load_after']}.",
             f"Model: {env['model']}.", "", "## Load test (streams, greedy, prompts of 8 tokens)", "",
             "Each row is the median of the rounds by tokens/s (all rounds' tokens/s in the last column); the rounds",
             "interleave the settings.", "",
             "| batching | concurrency | requests | req/s | tokens/s | p50 latency (s) | p99 latency (s) | p50 TTFT (s) | tokens/s, every round |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in res["load"]:
        lines.append(f"| {r['batching']} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['p50_latency_s']:.3f} | {r['p99_latency_s']:.3f} | "
                     f"{r['p50_ttft_s']:.3f} | {', '.join(str(x) for x in r['tokens_per_s_all_rounds'])} |")
    lines += ["", "## Decoding loop: zoo.generation.generate vs transformers generate (greedy, KV cache)", "",
              "| batch | new tokens | HF tokens/s | zoo tokens/s | zoo / HF | same tokens |", "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in res["decode"]:
        lines.append(f"| {r['batch']} | {r['new_tokens']} | {r['hf_tokens_per_s']:.0f} | {r['zoo_tokens_per_s']:.0f} | "
                     f"{r['speedup']:.2f}× | {r['same_tokens']} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in ("on", "off"):
        rows = [r for r in res["load"] if r["batching"] == mode]
        a.plot([r["concurrency"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=f"batching {mode}")
    a.set(xscale="log", xlabel="concurrent clients", ylabel="output tokens/s", title="zoo serve throughput")
    a.set_xticks([1, 4, 16], ["1", "4", "16"])
    a.legend()
    xs = range(len(res["decode"]))
    b.bar([x - 0.2 for x in xs], [r["hf_tokens_per_s"] for r in res["decode"]], 0.4, label="HF generate")
    b.bar([x + 0.2 for x in xs], [r["zoo_tokens_per_s"] for r in res["decode"]], 0.4, label="zoo.generation")
    b.set_xticks(list(xs), [f"batch {r['batch']}" for r in res["decode"]])
    b.set(ylabel="tokens/s", title="decoding loop, greedy + KV cache")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max_tokens", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="load-test rounds; the median round is reported")
    parser.add_argument("--quick", action="store_true", help="8 requests, 8 tokens, 2 repeats (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.new_tokens, args.repeats, args.rounds = 8, 8, 8, 2, 1
    import torch

    torch.set_num_threads(THREADS)
    res = {"environment": environment(), "load_before": [round(x, 2) for x in os.getloadavg()], "load": [],
           "decode": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hf, ours = build_model(folder)
        for batch in (1, 8):
            res["decode"].append(decoding_loop(hf, ours, batch, args.new_tokens, args.repeats))
            print(res["decode"][-1], flush=True)
        servers = {mode: start_server(folder, size) for mode, size in (("on", 16), ("off", 1))}
        runs: dict[tuple[str, int], list[dict]] = {}
        try:  # rounds interleave the settings, so a change in the machine's load hits all alike
            for _ in range(args.rounds):
                for c in (1, 4, 16):
                    for mode, (_, url) in servers.items():
                        runs.setdefault((mode, c), []).append(asyncio.run(load(url, c, args.requests, args.max_tokens)))
                        print(mode, runs[(mode, c)][-1], flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
        for (mode, c), rows in sorted(runs.items(), key=lambda kv: (kv[0][0] != "on", kv[0][1])):
            best = sorted(rows, key=lambda r: r["tokens_per_s"])[len(rows) // 2]  # the median round
            res["load"].append({"batching": mode, "rounds": len(rows),
                                "tokens_per_s_all_rounds": [round(r["tokens_per_s"], 1) for r in rows], **best})
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "serve-quick" if args.quick else "serve"
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(res))
    plot(res, RESULTS / f"{stem}.png")
    print(markdown(res))


if __name__ == "__main__":
    main()
