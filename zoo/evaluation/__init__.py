"""Evaluation: `zoo evaluate` runs the lm-evaluation-harness (through `ZooLM`, an `lm_eval` `LM`) and
each family's own metrics on a held-out split, over any number of models, into one report.

- `metrics`: one implementation per metric, shared with the tasks' validation (torch, torchmetrics only).
- `loading`: `load_for_evaluation` (checkpoint / HF directory → model, tokenizer, task and data settings);
  the one place later transforms (quantization) hook in.
- `harness`: `ZooLM`, the `lm_eval` wrapper; `local_tasks`: offline harness tasks from the embedded corpus.
- `family`: perplexity, bits per character, BLEU/ROUGE, accuracy/macro-F1, recall@k, zero-shot accuracy.
- `report`: console table, JSON, CSV and a bar chart.
- `command`: the `zoo evaluate` verb.

Nothing is imported here; `lm_eval` only where it is used (one-line error naming `pip install zoo[eval]`).
"""
