"""`zoo evaluate`: harness tasks and each family's own metrics, for any number of models, in one report."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

from zoo.errors import ZooError

FAMILY = "family"  # the pseudo-task: the model's own metrics on its held-out split
LOCAL = ("zoo_pydoc_perplexity", "zoo_pydoc_topic")


LIST_FLAGS = ("--model", "--tasks", "--names")


def gather_lists(args: list[str], flags: tuple[str, ...] = LIST_FLAGS) -> list[str]:
    """`--model a b c` → `--model=["a", "b", "c"]`, the list jsonargparse reads (it takes one value per flag)."""
    import json

    out, i = [], 0
    while i < len(args):
        if args[i] in flags:
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            values = args[i + 1:j]
            out.append(f"{args[i]}={json.dumps(values)}" if values else args[i])
            i = j
        else:
            out.append(args[i])
            i += 1
    return out


def check_tasks(tasks: list[str], manager) -> list[str]:
    """The harness task names among `tasks`; an unknown name is a one-line ZooError with the closest ones."""
    harness = [t for t in tasks if t != FAMILY]
    if not harness:
        return []
    known = set(manager.all_tasks)
    for name in harness:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known | {FAMILY}), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ZooError(f"unknown task '{name}': {hint}use '{FAMILY}' (the model's own metrics), "
                           f"{', '.join(LOCAL)} (offline), or an lm-eval task name (`lm_eval ls tasks`)")
    return harness


def harness_scores(loaded, tasks: list[str], manager, batch_size: int, device: str, limit: Optional[float],
                   num_fewshot: Optional[int], bootstrap_iters: int) -> dict[str, float]:
    import lm_eval

    from zoo.evaluation.harness import ZooLM

    lm = ZooLM(loaded.model, loaded.tokenizer, batch_size=batch_size, device=device)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                                  log_samples=False, bootstrap_iters=bootstrap_iters, verbosity="ERROR")
    scores = {}
    for task, results in out["results"].items():
        for key, value in results.items():
            metric, _, filt = key.partition(",")
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if "_stderr" in metric or metric == "sample_len" or not number:
                continue
            scores[f"{task}/{metric}" + ("" if filt in ("", "none") else f"[{filt}]")] = float(value)
    return scores


def unique_names(sources: list[str], names: Optional[list[str]]) -> list[str]:
    """Short distinct labels: the paths without their common prefix and the `logs/version_N/checkpoints`
    folders of a run; `names` when given."""
    if names is not None:
        if len(names) != len(sources) or len(set(names)) != len(names):
            raise ZooError(f"--names: give {len(sources)} distinct names, one per --model")
        return names
    parts = [[q for q in Path(s.rstrip("/")).with_suffix("").parts
              if q not in ("logs", "checkpoints") and not q.startswith("version_")] for s in sources]
    common = 0
    while len(sources) > 1 and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    out = ["/".join(p[common:]) for p in parts]
    if len(sources) == 1:
        out = [parts[0][-1]] if parts[0] else list(sources)
    return out if len(set(out)) == len(out) else list(sources)


def evaluate(
    model: list[str],
    tasks: Optional[list[str]] = None,
    out_dir: str = "eval",
    names: Optional[list[str]] = None,
    data: Optional[str] = None,
    split: str = "val",
    limit_batches: Optional[int] = None,
    decode_batches: Optional[int] = None,
    limit: Optional[float] = None,
    num_fewshot: Optional[int] = None,
    batch_size: int = 8,
    bootstrap_iters: int = 0,
    device: str = "cpu",
    task_cache: Optional[str] = None,
    quantize: Optional[str] = None,
) -> dict[str, dict[str, float]]:
    """Evaluate models side by side: lm-eval harness tasks and each family's own metrics, one report.

    Args:
        model: one or more `.ckpt` files written by `zoo fit`, or Hugging Face directories.
        tasks: "family" (the model's own metrics on its held-out split: perplexity and bits per
            character for language models, BLEU/ROUGE-L for seq2seq decoding, accuracy and macro-F1
            for classifiers, recall@k and zero-shot accuracy for CLIP), the offline harness tasks
            zoo_pydoc_perplexity and zoo_pydoc_topic, or any lm-eval task name (hub tasks such as
            hellaswag need the network once). Default: family, plus the two offline harness tasks
            for models that generate text.
        out_dir: folder for eval.json, eval.csv and (several models) eval.png.
        names: labels for the models in the report (default: their paths, shortened).
        data: a fit config (its `data:` section) for the family metrics; default: the data the
            checkpoint was trained with (needed for Hugging Face directories).
        split: "val" or "test".
        limit_batches: family metrics on the first N batches only (a run's limit_val_batches, to
            reproduce its logged figure).
        decode_batches: seq2seq batches decoded for BLEU/ROUGE (default: the task's generate_batches, at least 1).
        limit: harness examples per task (an int, or a fraction below 1).
        num_fewshot: harness few-shot examples (default: each task's own).
        batch_size: harness requests per forward pass.
        bootstrap_iters: harness bootstrap iterations for standard errors (0: none, fastest).
        device: "cpu", "cuda", ...
        task_cache: folder for the generated offline task files (default: the zoo data cache).
        quantize: quantize every model with torchao after loading, before any scoring: "int8-weight",
            "int8-dynamic" (CPU or CUDA), "int4-weight", "float8" (CUDA); see `zoo quantize`.
            eval.json records it (settings.quantize, and each model's scheme under quantization).
    """
    from zoo.evaluation import report
    from zoo.evaluation.loading import load_for_evaluation
    from zoo.families import can
    from zoo.models.base import Capability

    if split not in ("val", "test"):
        raise ZooError(f"--split {split!r}: use 'val' or 'test'")
    if quantize is not None:
        from zoo.compress.quantize import check_quantize_option

        check_quantize_option(quantize, device, model)
    explicit = tasks is not None
    wanted = list(tasks) if explicit else [FAMILY, *LOCAL]
    manager = None
    if any(t != FAMILY for t in wanted):
        from zoo.evaluation.local_tasks import task_manager

        manager = task_manager(task_cache, hub=not set(wanted) <= {FAMILY, *LOCAL})
    harness = check_tasks(wanted, manager) if manager is not None else []
    scores: dict[str, dict[str, float]] = {}
    quantization: dict[str, Optional[str]] = {}
    for source, name in zip(model, unique_names(model, names)):
        loaded = load_for_evaluation(source, data, device, quantize)
        quantization[name] = loaded.quantization
        row: dict[str, float] = {}
        if FAMILY in wanted and not explicit and loaded.data is None:
            print(f"note: no family metrics for '{source}': it carries no data config (pass --data)")
        elif FAMILY in wanted:
            from zoo.evaluation.family import family_metrics

            own = family_metrics(loaded, limit_batches, decode_batches, split)
            row.update({f"{FAMILY}/{k}": v for k, v in own.items()})
        generates = can(loaded.model, Capability.CAUSAL_LM) or can(loaded.model, Capability.SEQ2SEQ)
        if harness and (explicit or generates):
            try:
                row.update(harness_scores(loaded, harness, manager, batch_size, device, limit, num_fewshot,
                                          bootstrap_iters))
            except ZooError as err:
                raise ZooError(f"'{source}': {err}") from None
        scores[name] = row
    meta = {"sources": dict(zip(scores, model)), "quantization": quantization, "settings": {
        "tasks": wanted, "split": split, "limit_batches": limit_batches, "decode_batches": decode_batches,
        "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size, "quantize": quantize},
        **report.environment(device)}
    report.print_table(scores)
    for path in report.write_files(scores, meta, out_dir):
        print(f"wrote {path}")
    return scores
