"""The datatrove pipeline on a small generated corpus with planted problems: each filter removes
what it should and keeps the rest, MinHash finds planted near-duplicates, PII is scrubbed, the
shards hold exactly the surviving documents, and a crashed run resumes without redoing tasks."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datatrove")

from zoo.data.pipeline import stages  # noqa: E402
from zoo.data.pipeline.config import (  # noqa: E402
    C4Config, GopherQualityConfig, InputSpec, MinhashSettings, PIIConfig, TokenizeConfig,
)
from zoo.data.pipeline.report import collect, write_report  # noqa: E402
from zoo.data.pipeline.run import PipelineConfig, run_pipeline  # noqa: E402
from zoo.data.shards import open_split, read_index  # noqa: E402
from zoo.data.tokenizer import load_tokenizer  # noqa: E402

STOP = ["the", "of", "and", "to", "that", "with", "be", "have"]
WORDS = ["river", "garden", "window", "morning", "station", "letter", "market", "forest", "engine", "picture",
         "harbor", "winter", "teacher", "village", "kitchen", "mountain", "library", "country", "journey", "silver",
         "painted", "quietly", "opened", "carried", "walked", "bright", "narrow", "ancient", "simple", "careful"]
EMAILS = ["ada.lovelace@example.com", "j_smith+news@mail.co.uk", "ops@data-center.io"]
IPS = ["192.168.10.24", "8.8.4.4", "203.0.113.77"]
PHONES = ["(555) 123-4567", "+44 20 7946 0958", "415-555-0199"]


def prose(rng: random.Random, sentences: int = 30) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS if rng.random() < 0.6 else STOP) for _ in range(rng.randint(8, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return "\n".join(" ".join(out[i:i + 3]) for i in range(0, len(out), 3))


def edit(rng: random.Random, text: str, n: int) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), n):
        words[i] = "changed"
    return " ".join(words)


def shingles(text: str, n: int = 5) -> set:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def make_corpus(folder: Path) -> dict:
    """Two JSONL files (one gzipped): 24 distinct documents, 4 near-duplicates, 4 low-quality, PII."""
    rng = random.Random(3)
    good = [prose(rng) for _ in range(24)]
    for i, (email, ip, phone) in enumerate(zip(EMAILS, IPS, PHONES)):
        good[i] += f"\nWrite to {email} or call {phone} about the server at {ip}."
    dups = {f"dup{i}": edit(rng, good[10 + i], 3) for i in range(4)}
    bad = {
        "repetitive": "\n".join(["Buy the river garden window now and have the best."] * 40),
        "symbols": " ".join("#" + w if i % 3 == 0 else w for i, w in enumerate(prose(rng).split(" "))),
        "short": "Too short.",
        "lorem": prose(rng) + "\nLorem ipsum dolor sit amet, consectetur adipiscing of the elit.",
    }
    records = [{"id": f"good{i}", "text": t} for i, t in enumerate(good)]
    records += [{"id": k, "text": t} for k, t in {**dups, **bad}.items()]
    rng.shuffle(records)
    folder.mkdir(parents=True)
    half = len(records) // 2
    with open(folder / "a.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records[:half])
    with gzip.open(folder / "b.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in records[half:])
    return {"good": good, "dups": dups, "bad": bad}


def config(src: Path, out: Path, **kw) -> PipelineConfig:
    args = dict(output=str(out), inputs=[InputSpec(source=str(src))], tasks=2, workers=1,
                gopher_quality=GopherQualityConfig(), c4=C4Config(), minhash=MinhashSettings())
    args["tokenize"] = TokenizeConfig(vocab_size=400, val_fraction=0.2)
    return PipelineConfig(**args, **kw)


def documents(out: Path) -> dict[str, str]:
    docs = {}
    for file in sorted((out / "documents").glob("*.jsonl.gz")):
        with gzip.open(file, "rt") as f:
            docs.update((r["id"], r["text"]) for r in map(json.loads, f))
    return docs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    planted = make_corpus(root / "corpus")
    out = run_pipeline(config(root / "corpus", root / "out"))
    return planted, out


def test_filters_remove_the_planted_low_quality_and_keep_every_good_document(prepared):
    planted, out = prepared
    kept = documents(out)
    assert not set(planted["bad"]) & set(kept)
    assert {f"good{i}" for i in range(24) if not 10 <= i < 14} <= set(kept)  # 10..13: one of a planted pair
    report = collect(out)
    reasons = {k for row in report["rows"] for k in row["reasons"]}
    assert {"too_short", "lorem_ipsum"} <= reasons  # each removed by the stage meant for it
    assert any(r.startswith(("top_", "dup_", "duplicated")) for r in reasons)  # Gopher repetition
    assert any(r.startswith("gopher_") for r in reasons)  # Gopher quality (symbols)


def test_minhash_removes_planted_near_duplicates_and_keeps_distinct_documents(prepared):
    planted, out = prepared
    for key, text in planted["dups"].items():
        original = planted["good"][10 + int(key[3:])]
        assert jaccard(text, original) >= 0.85  # the similarity the test states, measured independently
    kept = documents(out)
    for i in range(4):  # exactly one of each planted pair survives
        assert (f"good{10 + i}" in kept) + (f"dup{i}" in kept) == 1
    assert len(kept) == 24
    distinct = [jaccard(planted["good"][i], planted["good"][j]) for i in range(5) for j in range(i + 1, 5)]
    assert max(distinct) < 0.2


def test_pii_of_every_planted_kind_is_scrubbed_and_counted(prepared):
    _, out = prepared
    text = "\n".join(documents(out).values())
    for value in EMAILS + IPS + PHONES:
        assert value not in text
    assert text.count("<EMAIL>") == 3 and text.count("<IP_ADDRESS>") == 3 and text.count("<PHONE>") == 3
    summary = write_report(str(out))
    assert "email 3, ip 3, phone 3" in summary
    assert (out / "report.md").is_file() and "## PII replaced" in (out / "report.md").read_text()


def test_shards_hold_exactly_the_kept_documents(prepared):
    _, out = prepared
    kept = documents(out)
    tok = load_tokenizer(out / "tokenizer.json")
    index = read_index(out)
    streams = [np.asarray(open_split(out, s)[:]) for s in ("train", "val")]
    docs = [d for s in streams for d in np.split(s, np.flatnonzero(s == index["eos_id"]) + 1) if len(d)]
    decoded = sorted(tok.decode(d[:-1].tolist()) for d in docs)
    assert decoded == sorted(kept.values())
    assert all(len(s) > 0 for s in streams)


def test_pii_scrubber_leaves_dates_versions_and_private_numbers_alone():
    scrub = stages.PIIScrubber(PIIConfig())
    text = "Released 2024-01-31 as version 3.11.4; call 555-010-2000 ext. or mail a@b.org at 10.0.0.1."
    out = scrub.format(text)
    assert "2024-01-31" in out and "3.11.4" in out
    assert out.count("<PHONE>") == 1 and "<EMAIL>" in out and "<IP_ADDRESS>" in out


def test_a_crashed_run_resumes_without_redoing_finished_tasks(tmp_path, monkeypatch):
    make_corpus(tmp_path / "corpus")
    cfg = config(tmp_path / "corpus", tmp_path / "out")
    original = stages.ShardTokenizer.run

    def crash_on_rank_1(self, data, rank=0, world_size=1):
        if rank == 1:
            raise RuntimeError("killed")
        yield from original(self, data, rank, world_size)

    monkeypatch.setattr(stages.ShardTokenizer, "run", crash_on_rank_1)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(cfg)
    out = tmp_path / "out"
    assert not (out / "shards.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in [out / "train/00000.bin", *out.glob("logs/*/completions/*")]}
    assert len(finished) == 1 + 2 + 14 + 1 + 1  # shard 0; filter x2, buckets x14, clusters, tokenize rank 0
    monkeypatch.setattr(stages.ShardTokenizer, "run", original)
    run_pipeline(cfg)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was redone
    assert (out / "logs/tokenize/completions/00001").exists() and (out / "shards.json").exists()
