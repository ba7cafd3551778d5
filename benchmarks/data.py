"""Data-pipeline benchmark: a synthetic corpus made from the embedded pydoc text, with planted
near-duplicates, low-quality documents and PII, run through `zoo data prepare`'s pipeline.

Measures preparation throughput (input MB/s, and per worker process), peak memory (the summed
proportional set size (PSS) of the process tree, sampled every second from /proc: shared pages count once), and precision/recall of
near-duplicate removal and PII recall against the planted truth. Writes
benchmarks/results/data-<size>mb.json and .md.

    python benchmarks/data.py --mb 50            # a quick run
    python benchmarks/data.py --mb 2048          # the >= 2 GB corpus of issue 19 (long on 2 cores)

Corpus: documents of 6 prose paragraphs drawn from `pydoc_data.topics`, 10% of their words
swapped for other words of that vocabulary (so documents differ); 5% planted near-duplicates
(copies of an earlier document with 1% of words substituted: 5-gram Jaccard ~0.9); 2% planted
low-quality documents (repeated lines; symbol soup); 5% of documents carry one e-mail address,
one IPv4 address and one phone number each.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import datetime
import gzip
import json
import os
import platform
import random
import resource
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def paragraphs() -> list[str]:
    from pydoc_data.topics import topics

    paras = [p.strip() for t in topics.values() for p in t.split("\n\n")]
    return [p for p in paras if len(p) > 200 and sum(c.isalpha() for c in p) > 0.7 * len(p)]


def pii(rng: random.Random, i: int) -> tuple[str, str, str]:
    email = f"user{i}.{rng.choice(['smith', 'lee', 'garcia'])}@{rng.choice(['example.com', 'mail.org', 'corp.io'])}"
    ip = f"{rng.randint(11, 190)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    phone = rng.choice([f"({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
                        f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"])
    return email, ip, phone


def make_corpus(folder: Path, mb: float, files: int, seed: int = 0) -> dict:
    """JSONL.gz files of about ``mb`` MB of text; returns the planted truth."""
    rng, paras = random.Random(seed), paragraphs()
    vocab = sorted({w for p in paras[:500] for w in p.split() if w.isalpha()})
    folder.mkdir(parents=True, exist_ok=True)
    outs = [gzip.open(folder / f"part{i:03d}.jsonl.gz", "wt", compresslevel=1) for i in range(files)]
    truth = {"dups": [], "bad": [], "pii": [], "docs": 0, "bytes": 0}
    recent: list[tuple[str, str]] = []
    i, target = 0, mb * 1e6
    while truth["bytes"] < target:
        roll = rng.random()
        if roll < 0.05 and recent:
            orig_id, orig = rng.choice(recent)
            words = orig.split(" ")
            for j in rng.sample(range(len(words)), max(1, len(words) // 100)):
                words[j] = rng.choice(vocab)
            text, doc_id = " ".join(words), f"dup{i}"
            truth["dups"].append([orig_id, doc_id])
        elif roll < 0.07:
            doc_id = f"bad{i}"
            text = ("\n".join([rng.choice(paras)[:80]] * 30) if rng.random() < 0.5
                    else " ".join(rng.choice(["#", "$$", "%%", "&&", "@"]) + w for w in rng.choice(paras).split()))
            truth["bad"].append(doc_id)
        else:
            doc_id = f"doc{i}"
            body = []
            for p in rng.sample(paras, 6):
                body.append(" ".join(w if rng.random() > 0.1 else rng.choice(vocab) for w in p.split(" ")))
            if rng.random() < 0.05:
                email, ip, phone = pii(rng, i)
                body.insert(rng.randint(1, 5), f"Contact {email} or call {phone}; the host is {ip}.")
                truth["pii"].append([doc_id, email, ip, phone])
            text = "\n\n".join(body)
            recent = (recent + [(doc_id, text)])[-200:]
        outs[i % files].write(json.dumps({"id": doc_id, "text": text}) + "\n")
        truth["bytes"] += len(text.encode("utf-8"))
        truth["docs"] += 1
        i += 1
    for f in outs:
        f.close()
    return truth


class PeakMemory:
    """Peak of the summed RSS of this process and all its descendants, sampled from /proc."""

    def __init__(self, interval: float = 1.0):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _tree_rss(self) -> int:
        parents, rss = {}, {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            ppid = re.search(r"PPid:\s+(\d+)", status)
            parents[int(pid)] = int(ppid.group(1)) if ppid else 0
            try:  # PSS: pages shared by forked workers counted once, not once per process
                mem = re.search(r"Pss:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text())
            except OSError:
                mem = None
            rss[int(pid)] = int(mem.group(1)) * 1024 if mem else 0
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            p = frontier.pop()
            kids = [c for c, pp in parents.items() if pp == p and c not in tree]
            tree.update(kids), frontier.extend(kids)
        return sum(rss.get(p, 0) for p in tree)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ids_in(folder: Path) -> set[str]:
    out = set()
    for file in folder.glob("*.jsonl.gz"):
        with gzip.open(file, "rt") as f:
            out.update(json.loads(line)["id"] for line in f)
    return out


def score(out: Path, truth: dict) -> dict:
    removed = {d.name: ids_in(d) for d in (out / "work" / "removed").iterdir()}
    by_minhash = removed.pop("minhash", set())
    by_filters = set().union(*removed.values()) if removed else set()
    pairs = [p for p in truth["dups"] if not set(p) & by_filters]  # both reached MinHash
    found = sum(bool(set(p) & by_minhash) for p in pairs)
    planted_members = {d for p in pairs for d in p}
    true_removals = len(by_minhash & planted_members)
    # PII left in the output, streamed document by document (a 2 GB corpus does not fit one string): each
    # kept document is searched for the planted values of its own source document (a planted near-duplicate
    # carries its original's PII too).
    planted = {doc_id: vals for doc_id, *vals in truth["pii"]}
    source = {dup: orig for orig, dup in truth["dups"]}
    values, left = sum(len(v) for v in planted.values()), 0
    for file in (out / "documents").glob("*.jsonl.gz"):
        with gzip.open(file, "rt") as f:
            for line in f:
                doc = json.loads(line)
                vals = planted.get(doc["id"]) or planted.get(source.get(doc["id"]), ())
                left += sum(v in doc["text"] for v in vals)
    bad = set(truth["bad"])
    return {
        "near_dup": {"planted_pairs_reaching_minhash": len(pairs), "pairs_found": found,
                     "recall": found / len(pairs) if pairs else None, "removed": len(by_minhash),
                     "removed_from_planted_pairs": true_removals,
                     "precision": true_removals / len(by_minhash) if by_minhash else None},
        "pii": {"planted_values": values, "left_in_output": left,
                "recall": 1 - left / values if values else None},
        "low_quality": {"planted": len(bad), "removed_by_filters": len(bad & by_filters),
                        "recall": len(bad & by_filters) / len(bad) if bad else None,
                        "other_docs_removed_by_filters": len(by_filters - bad)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB of text")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--workdir", default="/tmp/zoo-data-bench")
    args = ap.parse_args()

    from zoo.data.pipeline.run import PipelineConfig, quiet_console, run_pipeline
    from zoo.data.prepare import DataCommands
    import jsonargparse
    import yaml

    work = Path(args.workdir) / f"{args.mb:g}mb"
    os.system(f"rm -rf '{work}'")
    t0 = time.perf_counter()
    truth = make_corpus(work / "corpus", args.mb, files=args.tasks)
    gen_s = time.perf_counter() - t0
    cfg = yaml.safe_load((ROOT / "configs/data/bench.yaml").read_text())
    cfg.update(output=str(work / "out"), tasks=args.tasks, workers=args.workers,
               inputs=[{"source": str(work / "corpus")}])
    parser = jsonargparse.ArgumentParser()
    parser.add_method_arguments(DataCommands, "prepare")
    ns = parser.instantiate_classes(parser.parse_object({k: v for k, v in cfg.items() if k != "report"}))
    fields = {k: v for k, v in vars(ns).items() if k in PipelineConfig.__dataclass_fields__}
    quiet_console()
    load_at_start = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        run_pipeline(PipelineConfig(**fields))
        seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, cpu1))
    mbs = truth["bytes"] / 1e6 / seconds
    result = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
        "datatrove": importlib.metadata.version("datatrove"),
        "corpus_mb": truth["bytes"] / 1e6, "docs": truth["docs"], "tasks": args.tasks, "workers": args.workers,
        "generate_seconds": gen_s, "prepare_seconds": seconds, "mb_per_s": mbs, "mb_per_s_per_worker": mbs / args.workers,
        "cpu_seconds": cpu_s, "mb_per_cpu_second": truth["bytes"] / 1e6 / cpu_s,
        "peak_pss_mib": mem.peak / 2**20, **score(work / "out", truth),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"data-{args.mb:g}mb"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    nd, p, lq = result["near_dup"], result["pii"], result["low_quality"]
    table = "\n".join([
        "| corpus | docs | workers | MB/s | MB/s per worker | MB per CPU-second | peak PSS (MiB) | near-dup precision | near-dup recall | "
        "PII recall | low-quality recall |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {result['corpus_mb']:.0f} MB | {result['docs']:,} | {args.workers} | {mbs:.2f} | {mbs / args.workers:.2f} | "
        f"{result['mb_per_cpu_second']:.2f} | "
        f"{result['peak_pss_mib']:.0f} | {nd['precision']:.3f} | {nd['recall']:.3f} | {p['recall']:.3f} | {lq['recall']:.3f} |",
    ])
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
