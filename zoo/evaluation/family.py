"""Each family's own metrics on the held-out split its task validates on, computed by the same metric
objects the task's `validation_step` logs (`zoo.evaluation.metrics`), batch by batch in the same order:

| task | metrics |
| --- | --- |
| causal LM (GPT, LLaMA) | perplexity, bits per character |
| masked LM (BERT) | perplexity and bits per character of the masked tokens, masked-token accuracy |
| seq2seq LM (T5, BART) | perplexity; BLEU and ROUGE-L of greedy and beam-search decodes |
| classification (any family) | accuracy, macro-F1 |
| contrastive (CLIP) | image→text and text→image recall@k, zero-shot accuracy |

With the same batches (`limit_batches` = the run's `limit_val_batches`), a checkpoint's figures equal
the ones its validation logged. Which metrics apply is decided by the task's type, not the family's
name: a GPT fine-tuned as a classifier is scored as a classifier.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Optional

import torch

from zoo.evaluation import metrics
from zoo.evaluation.loading import Loaded, build_datamodule

IGNORE_INDEX = metrics.IGNORE_INDEX


def characters(tokenizer, labels: torch.Tensor) -> int:
    """How many characters the scored (not -100) labels of each row decode to, summed."""
    if tokenizer is None:
        return int((labels != IGNORE_INDEX).sum())
    return sum(len(tokenizer.decode([t for t in row if t != IGNORE_INDEX])) for row in labels.tolist())


def _batches(loader, limit: Optional[int], device) -> Iterable[dict]:
    for batch in islice(loader, limit):
        yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def causal_lm(loaded: Loaded, batches) -> dict[str, float]:
    """Through the task's own validation forward when it is a `CausalLM` (instruction tuning passes its
    packing's positions and segments), else (a distilled student) the model's plain forward."""
    from zoo.tasks import CausalLM

    ppl, bpc = metrics.perplexity(), metrics.BitsPerCharacter()
    for batch in batches:
        if isinstance(loaded.task, CausalLM):
            logits = loaded.task._loss(batch)[1].float()  # (B, T, V)
        else:
            logits = loaded.model(batch["input_ids"], attention_mask=batch.get("attention_mask")).float()
        ppl.update(logits, batch["labels"])
        bpc.update(logits, batch["labels"], characters(loaded.tokenizer, batch["labels"]))
    return {"ppl": float(ppl.compute()), "bpc": float(bpc.compute())}


def masked_lm(loaded: Loaded, batches) -> dict[str, float]:
    from zoo.tasks.masked_lm import masked_positions

    vocab = loaded.model.config.vocab_size
    ppl, bpc, acc = metrics.perplexity(), metrics.BitsPerCharacter(), metrics.accuracy(vocab)
    for batch in batches:
        logits = loaded.model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                              token_type_ids=batch.get("token_type_ids"))  # (B, T, V)
        chosen, labels = masked_positions(logits.float(), batch["labels"])  # (N, V), (N,)
        ppl.update(chosen[None], labels[None])
        bpc.update(chosen, labels, characters(loaded.tokenizer, labels[None]))
        acc.update(chosen.argmax(-1), labels)
    return {"ppl": float(ppl.compute()), "bpc": float(bpc.compute()), "acc": float(acc.compute())}


def seq2seq_lm(loaded: Loaded, batches, decode_batches: Optional[int] = None) -> dict[str, float]:
    """Perplexity on every batch; BLEU and ROUGE-L on the first `decode_batches` (default: the task's
    `generate_batches`, at least 1), each on the task's `generate_examples` first examples."""
    from zoo.tasks.seq2seq_lm import output_text, seq2seq_loss

    task, model = loaded.task, loaded.model
    decode_batches = decode_batches if decode_batches is not None else max(1, task.generate_batches)
    ppl = metrics.perplexity()
    scores = {mode: (metrics.bleu(), metrics.rouge_l()) for mode in ("greedy", "beam")}
    for i, batch in enumerate(batches):
        _, logits = seq2seq_loss(model, batch, batch["labels"])
        ppl.update(logits.float(), batch["labels"])
        if i >= decode_batches:
            continue
        n = task.generate_examples
        batch = {k: v[:n] for k, v in batch.items()} if n else batch
        targets = [output_text(model, row.tolist(), loaded.tokenizer) for row in batch["labels"]]
        for mode, beams in (("greedy", 1), ("beam", task.num_beams)):
            out = model.generate(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                 max_new_tokens=task.max_new_tokens or batch["labels"].shape[1], num_beams=beams)
            texts = [output_text(model, row[1:].tolist(), loaded.tokenizer) for row in out]  # start token first
            scores[mode][0].update(texts, [[t] for t in targets])
            scores[mode][1].update(texts, targets)
    out = {"ppl": float(ppl.compute())}
    for mode, (bleu, rouge) in scores.items():
        out[f"bleu_{mode}"] = float(bleu.compute())
        out[f"rougeL_{mode}"] = float(rouge.compute()["rougeL_fmeasure"])
    return out


def classification(loaded: Loaded, batches, datamodule) -> dict[str, float]:
    task = loaded.task
    if task.text_to_text:
        task.set_label_targets(datamodule.label_target_ids())
    acc, f1 = metrics.accuracy(task.num_labels), metrics.macro_f1(task.num_labels)
    for batch in batches:
        preds = task.predict_labels(batch)
        acc.update(preds, batch["labels"])
        f1.update(preds, batch["labels"])
    return {"acc": float(acc.compute()), "macro_f1": float(f1.compute())}


def contrastive(loaded: Loaded, batches, datamodule) -> dict[str, float]:
    from zoo.tasks.contrastive import caption_keys, zero_shot_classifier

    task = loaded.task
    images, texts, keys, labels = [], [], [], []
    for batch in batches:
        _, out = task.contrastive_step(batch)
        images.append(out.image_embeds.float())
        texts.append(out.text_embeds.float())
        keys.append(caption_keys(batch["input_ids"], batch.get("attention_mask")))
        labels.append(batch.get("labels", torch.full_like(keys[-1], -1)))
    images, texts, keys, labels = map(torch.cat, (images, texts, keys, labels))
    similarity, positives = images @ texts.t(), keys[:, None] == keys[None, :]
    out = {}
    for k in task.recall_k:
        out[f"i2t_R@{k}"] = float(metrics.recall_at_k(similarity, positives, k))
        out[f"t2i_R@{k}"] = float(metrics.recall_at_k(similarity.t(), positives.t(), k))
    names, templates = getattr(datamodule, "class_names", None), getattr(datamodule, "templates", None)
    known = labels >= 0
    if names and templates and bool(known.any()):
        classes = zero_shot_classifier(loaded.model.encode_text, datamodule.tokenize, names, templates, images.device)
        out["zero_shot_acc"] = float(metrics.zero_shot_accuracy(images[known], classes, labels[known]))
    return out


@torch.no_grad()
def family_metrics(loaded: Loaded, limit_batches: Optional[int] = None, decode_batches: Optional[int] = None,
                   split: str = "val") -> dict[str, float]:
    """The metrics of `loaded`'s task on its data module's `split` ("val" or "test"), first `limit_batches`."""
    from zoo.tasks import CausalLM, Contrastive, MaskedLM, Seq2SeqLM
    from zoo.tasks import SequenceClassification as Classification

    dm = build_datamodule(loaded)
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    device = next(loaded.model.parameters()).device
    batches = _batches(loader, limit_batches, device)
    task = loaded.task
    if isinstance(task, Classification):
        return classification(loaded, batches, dm)
    if isinstance(task, Contrastive):
        return contrastive(loaded, batches, dm)
    if isinstance(task, Seq2SeqLM):
        return seq2seq_lm(loaded, batches, decode_batches)
    if isinstance(task, MaskedLM):
        return masked_lm(loaded, batches)
    if isinstance(task, CausalLM):
        return causal_lm(loaded, batches)
    from zoo.families import can
    from zoo.models.base import Capability

    if can(loaded.model, Capability.CAUSAL_LM):  # a task of its own (distillation) on language-model data
        return causal_lm(loaded, batches)
    if can(loaded.model, Capability.MASKED_LM):
        return masked_lm(loaded, batches)
    from zoo.errors import ZooError

    raise ZooError(f"zoo evaluate has no family metrics for a {type(task).__name__} checkpoint; "
                   "use --tasks for harness tasks")
