"""Assemble and run the pipeline: read → clean → filter → scrub → MinHash → tokenize → shards.

Five datatrove executors run one after another (each a ``LocalPipelineExecutor`` here; the same
step lists run on ``SlurmPipelineExecutor`` / ``RayPipelineExecutor``, see the README):

1. ``filter`` (``tasks``): readers → ``NormalizeText`` → language → Gopher repetition → Gopher
   quality → C4 → ``PIIScrubber`` → JSONL ``work/filtered/`` → MinHash signatures;
2. ``minhash-buckets`` (``num_buckets`` tasks): LSH bands → candidate duplicate pairs;
3. ``minhash-clusters`` (1 task): union-find over the pairs → which documents to drop;
4. the tokenizer: loaded, or trained on a bounded sample of ``work/filtered/``;
5. ``tokenize`` (``tasks``): MinHash filter → ``DocStats`` → JSONL ``documents/`` →
   ``ShardTokenizer`` (``train/*.bin``, ``val/*.bin``).

Each executor records finished tasks under ``logs/<stage>/completions``: a rerun after a crash or
a kill skips them and redoes only the rest. ``shards.json`` is written last, so a folder with one
is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from zoo.data.pipeline.config import (
    C4Config, CleanConfig, GopherQualityConfig, GopherRepetitionConfig, InputSpec, LanguageConfig, MinhashSettings,
    PIIConfig, TokenizeConfig,
)
from zoo.errors import ZooError

SHARDS_FILE = "shards.json"
SETTINGS_FILE = "settings.json"


@dataclasses.dataclass
class PipelineConfig:
    """The whole YAML; see ``zoo.data.prepare.prepare`` for each key."""

    output: str
    inputs: list[InputSpec] = dataclasses.field(default_factory=lambda: [InputSpec()])
    tasks: int = 2
    workers: int = 2
    clean: CleanConfig = dataclasses.field(default_factory=CleanConfig)
    language: Optional[LanguageConfig] = None
    gopher_repetition: Optional[GopherRepetitionConfig] = dataclasses.field(default_factory=GopherRepetitionConfig)
    gopher_quality: Optional[GopherQualityConfig] = dataclasses.field(default_factory=GopherQualityConfig)
    c4: Optional[C4Config] = None
    pii: Optional[PIIConfig] = dataclasses.field(default_factory=PIIConfig)
    minhash: Optional[MinhashSettings] = dataclasses.field(default_factory=MinhashSettings)
    tokenize: TokenizeConfig = dataclasses.field(default_factory=TokenizeConfig)
    keep_documents: bool = True


def require_datatrove() -> None:
    try:
        import datatrove  # noqa: F401
    except ImportError as err:
        raise ZooError("the data pipeline needs datatrove; install it with `pip install zoo[data]`") from err


def reader_steps(spec: InputSpec) -> list:
    """The datatrove reader(s) for one input."""
    from zoo.data.pipeline import stages

    kind = spec.format if spec.format != "auto" else _infer_format(spec.source)
    if kind == "pydoc":
        return [stages.PydocReader(spec.limit)]
    if kind == "text":
        return [stages.TextFilesReader(spec.source, spec.limit)]
    if kind == "hf":
        from datatrove.pipeline.readers import HuggingFaceDatasetReader

        name, _, config = spec.source.removeprefix("hf:").partition(":")
        options = {"split": spec.hf_split, **({"name": config} if config else {})}
        return [HuggingFaceDatasetReader(name, options, streaming=True, limit=spec.limit, text_key=spec.text_key,
                                         id_key=spec.id_key)]
    from datatrove.pipeline.readers import JsonlReader, ParquetReader

    folder, pattern = _folder_and_glob(spec.source, kind)
    cls = JsonlReader if kind == "jsonl" else ParquetReader
    extra = {"compression": "infer"} if kind == "jsonl" else {}
    return [cls(folder, glob_pattern=pattern, limit=spec.limit, text_key=spec.text_key, id_key=spec.id_key, **extra)]


def _infer_format(source: str) -> str:
    if source == "pydoc":
        return "pydoc"
    if source.startswith("hf:"):
        return "hf"
    name = source.rstrip("/").lower()
    for kind, marks in (("jsonl", (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz")), ("parquet", (".parquet",))):
        if name.endswith(marks) or any(f"*{m}" in name for m in marks):
            return kind
    path = Path(source).expanduser()
    if path.is_dir():  # a folder of JSONL or Parquet files reads as those; anything else as text
        names = [p.name.lower() for p in path.rglob("*") if p.is_file()]
        if names and all(n.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")) for n in names):
            return "jsonl"
        if names and all(n.endswith(".parquet") for n in names):
            return "parquet"
    return "text"


def _folder_and_glob(source: str, kind: str) -> tuple[str, Optional[str]]:
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path), None
    if path.is_file():
        return str(path.parent), path.name
    head = source.split("*")[0]
    folder = head if head.endswith("/") else os.path.dirname(head) or "."
    if not Path(folder).is_dir():
        raise ZooError(f"{kind} source {source!r} does not exist; give a file, a folder or a glob of {kind} files")
    return folder, source[len(folder):].lstrip("/")


def filter_steps(cfg: PipelineConfig, work: Path) -> list:
    """Stage 1's steps after the readers (each with its exclusion writer for the report's examples)."""
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.writers import JsonlWriter

    from zoo.data.pipeline import stages

    def removed(name: str) -> JsonlWriter:
        return JsonlWriter(str(work / "removed" / name), output_filename="${rank}.jsonl.gz")

    steps: list[Any] = [stages.NormalizeText(cfg.clean.normalize, cfg.clean.min_chars, removed("normalize"))]
    if cfg.language is not None and (lid := language_filter(cfg.language, removed("language"))) is not None:
        steps.append(lid)
    words = {"language": stages.WORDS}
    if cfg.gopher_repetition is not None:
        args = dataclasses.asdict(cfg.gopher_repetition)
        args["top_n_grams"] = tuple(map(tuple, args["top_n_grams"]))
        args["dup_n_grams"] = tuple(map(tuple, args["dup_n_grams"]))
        steps.append(GopherRepetitionFilter(**args, exclusion_writer=removed("gopher_repetition"), **words))
    if cfg.gopher_quality is not None:
        steps.append(GopherQualityFilter(**dataclasses.asdict(cfg.gopher_quality),
                                         exclusion_writer=removed("gopher_quality"), **words))
    if cfg.c4 is not None:
        steps.append(C4QualityFilter(**dataclasses.asdict(cfg.c4), exclusion_writer=removed("c4"), **words))
    if cfg.pii is not None:
        steps.append(stages.PIIScrubber(cfg.pii))
    return steps


def language_filter(cfg: LanguageConfig, exclusion_writer):
    """datatrove's fastText ``LanguageFilter`` when it can run offline, else None (said in one line)."""
    try:
        import fasttext  # noqa: F401
        from datatrove.pipeline.filters import LanguageFilter
        from datatrove.utils.lid import FT176LID
        from huggingface_hub import cached_assets_path
    except ImportError:
        print("data: language identification skipped (needs `pip install fasttext-numpy2-wheel`)")
        return None
    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    model = Path(folder) / FT176LID.MODEL_URL.split("://")[-1].replace("/", "_")
    if not model.is_file():
        print(f"data: language identification skipped (no fastText lid.176 model at {model}; no download offline)")
        return None
    return LanguageFilter(cfg.languages, cfg.language_threshold, exclusion_writer=exclusion_writer)


def minhash_config(settings: MinhashSettings):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(n_grams=settings.n_grams, num_buckets=settings.num_buckets,
                         hashes_per_bucket=settings.hashes_per_bucket, seed=settings.seed,
                         hash_config=HashConfig(precision=64, hash_fc=settings.hash_fc))


def executor(steps: list, logs: Path, tasks: int, workers: int):
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(steps, tasks=tasks, workers=max(1, min(workers, tasks)), logging_dir=str(logs),
                                 start_method="fork")


def check_settings(cfg: PipelineConfig, out: Path) -> None:
    """A rerun may resume only a run with the same settings; anything else would mix two corpora."""
    settings = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    file = out / SETTINGS_FILE
    if file.is_file() and file.read_text() != settings:
        raise ZooError(f"{out} holds a run with other settings; delete it or set another `output`")
    out.mkdir(parents=True, exist_ok=True)
    file.write_text(settings)


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every stage (skipping finished tasks of an earlier run); the output folder."""
    require_datatrove()
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.writers import JsonlWriter

    from zoo.data.pipeline import stages

    if cfg.tasks < 1 or cfg.workers < 1:
        raise ZooError(f"tasks={cfg.tasks} and workers={cfg.workers} must be at least 1")
    out = Path(cfg.output).expanduser()
    check_settings(cfg, out)
    work, logs = out / "work", out / "logs"
    readers = [step for spec in cfg.inputs for step in reader_steps(spec)]
    first = readers + filter_steps(cfg, work) + [JsonlWriter(str(work / "filtered"), output_filename="${rank}.jsonl.gz")]
    mh = minhash_config(cfg.minhash) if cfg.minhash is not None else None
    if mh is not None:
        first.append(MinhashDedupSignature(str(work / "minhash" / "signatures"), config=mh, language=stages.WORDS))
    executor(first, logs / "filter", cfg.tasks, cfg.workers).run()
    if mh is not None:
        buckets = [MinhashDedupBuckets(str(work / "minhash" / "signatures"), str(work / "minhash" / "buckets"), config=mh)]
        executor(buckets, logs / "minhash-buckets", mh.num_buckets, cfg.workers).run()
        clusters = [MinhashDedupCluster(str(work / "minhash" / "buckets"), str(work / "minhash" / "remove"), config=mh,
                                        save_cluster_size=True)]
        executor(clusters, logs / "minhash-clusters", 1, 1).run()
    tokenizer_path, eos_id = prepare_tokenizer(cfg.tokenize, work / "filtered", out)
    last: list[Any] = [stages.RankJsonlReader(str(work / "filtered"))]
    if mh is not None:
        removed = JsonlWriter(str(work / "removed" / "minhash"), output_filename="${rank}.jsonl.gz")
        last.append(MinhashDedupFilter(str(work / "minhash" / "remove"), exclusion_writer=removed,
                                       load_cluster_sizes=True))
    last.append(stages.DocStats())
    if cfg.keep_documents:
        last.append(JsonlWriter(str(out / "documents"), output_filename="${rank}.jsonl.gz"))
    last.append(stages.ShardTokenizer(str(out), str(tokenizer_path), eos_id, cfg.tokenize.val_fraction,
                                      cfg.tokenize.seed))
    executor(last, logs / "tokenize", cfg.tasks, cfg.workers).run()
    write_shards_index(out, tokenizer_path, eos_id)
    return out


def prepare_tokenizer(cfg: TokenizeConfig, filtered: Path, out: Path) -> tuple[Path, int]:
    """``out/tokenizer.json``: copied from ``cfg.tokenizer``, kept from an earlier run, or trained on a
    sample of at most ``sample_chars`` characters of the filtered documents."""
    from zoo.data.cache import write_once
    from zoo.data.tokenizer import eos_token_id, load_tokenizer, train_tokenizer

    path = out / "tokenizer.json"
    if not path.is_file():
        if cfg.tokenizer is not None:
            tok = load_tokenizer(cfg.tokenizer)
        else:
            sample = list(sample_texts(filtered, cfg.sample_chars))
            if not sample:
                raise ZooError("no document survived the filters, so there is nothing to train a tokenizer on; "
                               "loosen the thresholds in the YAML or add text (see the report under logs/)")
            tok = train_tokenizer(sample, cfg.kind, cfg.vocab_size, cfg.special_tokens)
        write_once(path, lambda f: f.write(tok.to_str(pretty=True).encode("utf-8")))
    tok = load_tokenizer(path)
    return path, eos_token_id(tok)


def sample_texts(folder: Path, max_chars: int):
    """Documents of the ``*.jsonl.gz`` files in ``folder``, one file after another, up to ``max_chars``."""
    import gzip

    chars = 0
    for file in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(file, "rt", encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                yield text
                chars += len(text)
                if chars >= max_chars:
                    return


def write_shards_index(out: Path, tokenizer_path: Path, eos_id: int) -> None:
    """``shards.json``: every non-empty shard with its token count, the dtype and the tokenizer."""
    from zoo.data.tokenizer import load_tokenizer

    vocab = load_tokenizer(tokenizer_path).get_vocab_size()
    itemsize = 4 if vocab > 2**16 else 2
    splits = {}
    for split in ("train", "val"):
        files = sorted((out / split).glob("*.bin"))
        splits[split] = [{"file": f"{split}/{f.name}", "tokens": f.stat().st_size // itemsize}
                         for f in files if f.stat().st_size > 0]
    index = {"format": 1, "dtype": "uint32" if itemsize == 4 else "uint16", "vocab_size": vocab, "eos_id": eos_id,
             "tokenizer": tokenizer_path.name, "splits": splits}
    (out / SHARDS_FILE).write_text(json.dumps(index, indent=2))


def quiet_console() -> None:
    """datatrove logs every task to the console; keep its full logs in ``logs/<stage>/logs/`` and
    warnings on the console, where the report's summary follows."""
    import sys

    import datatrove.executor.base as base
    from datatrove.utils.logging import logger

    def task_logger(logging_dir, rank, local_rank=0, node_rank=-1, _add=base.add_task_logger):
        logfile = _add(logging_dir, rank, local_rank, node_rank)
        logger.remove()
        logger.add(sys.stderr, level="WARNING")
        logger.add(logfile, level="DEBUG")
        return logfile

    def close_logger(logfile, _close=base.close_task_logger):
        _close(logfile)
        logger.remove()
        logger.add(sys.stderr, level="WARNING")

    if getattr(base.add_task_logger, "__name__", "") != "task_logger":
        base.add_task_logger, base.close_task_logger = task_logger, close_logger
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
