"""Harness tasks that run offline, built from the embedded corpus (the Python documentation topics in
`pydoc_data`) and written on first use as lm-eval task YAMLs plus JSONL data files into a cache folder
that `lm_eval.tasks.TaskManager(include_path=...)` reads (`dataset_path: json`, `dataset_kwargs.data_files`).

- `zoo_pydoc_perplexity` (`loglikelihood_rolling`, like the harness's `wikitext`): paragraphs of the
  documents `zoo fit`'s default text data holds out (`split_documents`, val_fraction 0.1, seed 1234),
  so the demo GPT never trained on them. Metrics: word and byte perplexity, bits per byte.
- `zoo_pydoc_topic` (`multiple_choice`): which of six documentation topics a paragraph comes from,
  over the validation paragraphs of the embedded classification task (`ClassificationDataModule`'s
  defaults); the choices are the six topic names. Metrics: acc, acc_norm.

Hub tasks (hellaswag, arc_easy, lambada_openai, wikitext, ...) need the network the first time:
`zoo evaluate --model M --tasks hellaswag` with HF_DATASETS_OFFLINE unset downloads them through
`datasets`; later runs read the datasets cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

LOCAL_TASKS = ("zoo_pydoc_perplexity", "zoo_pydoc_topic")
VERSION = 2  # bump when the data or the YAML change, so stale caches are rewritten
MIN_PARAGRAPH_CHARS = 80

PERPLEXITY_YAML = """task: zoo_pydoc_perplexity
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: {version}
"""

TOPIC_YAML = """task: zoo_pydoc_topic
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}\\nQuestion: Which Python documentation topic is this from?\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: {version}
"""


def default_cache_dir() -> Path:
    from zoo.data.cache import resolve_cache_dir

    return resolve_cache_dir() / "eval-tasks"


def perplexity_docs() -> list[dict]:
    """Held-out paragraphs of the default text data (the documents `TextDataModule` validates on)."""
    from zoo.data.cleaning import clean_documents, split_paragraphs
    from zoo.data.sources import load_documents
    from zoo.data.split import split_documents

    docs, _ = clean_documents(load_documents("pydoc"), 32, True)
    _, held_out = split_documents(docs, 0.1, 1234)
    return [{"text": p.strip(), "topic": d.id} for d in held_out for p in split_paragraphs(d.text)
            if len(p.strip()) >= MIN_PARAGRAPH_CHARS]


def topic_docs() -> list[dict]:
    """The embedded classification task's validation paragraphs, the six topic names as choices."""
    from zoo.data.classification import ClassificationDataModule

    dm = ClassificationDataModule()
    names = list(dm.label_names)
    return [{"text": text, "choices": names, "label": names.index(label)} for text, label in dm.examples("val")]


def write_local_tasks(cache_dir: Optional[str | Path] = None) -> Path:
    """The folder of task YAMLs and data (written when missing or stale); pass it as `include_path`."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"v{VERSION}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, docs, template in (("zoo_pydoc_perplexity", perplexity_docs(), PERPLEXITY_YAML),
                                 ("zoo_pydoc_topic", topic_docs(), TOPIC_YAML)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        (folder / f"{name}.yaml").write_text(template.format(data=json.dumps(str(data)), version=VERSION))
    (folder / "done").write_text("")
    return folder


def task_manager(cache_dir: Optional[str | Path] = None, hub: bool = True):
    """An `lm_eval` TaskManager that knows the local tasks and, with `hub`, the harness's own (indexing
    those takes ~15 s on one CPU core, so leave them out when only local tasks run)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        from zoo.errors import ZooError

        raise ZooError("harness tasks need the lm-evaluation-harness: pip install 'zoo[eval]'") from None
    return TaskManager(include_path=str(write_local_tasks(cache_dir)), include_defaults=hub)
