"""Instruction tuning (supervised fine-tuning, Ouyang et al., 2022): next-token cross-entropy on the
response tokens of packed chat examples, from a pre-trained decoder.

Batches come from `zoo.data.InstructionDataModule`: labels are -100 on prompt tokens, and each
block carries `segment_ids` and `position_ids` so that packed examples never attend to each other
(`zoo.blocks.attend`). The logged val/loss is therefore the held-out *response* loss.

`init_from` loads a zoo checkpoint of the same architecture. The chat template's special tokens
grow the vocabulary: rows the checkpoint has are copied, and each new row of the embedding (and
of an untied head) starts at the mean of the pre-trained rows (Hewitt, 2021), so the new tokens
begin as an average token rather than noise.

The chat template is saved in the checkpoint (checkpoint["zoo"]["chat_template"]: its Jinja source,
bos/eos tokens and the stop strings that end an answer, `ChatTemplate.to_meta`), so that `zoo serve`
prompts the model as it was trained and `zoo export --format hf` writes it to tokenizer_config.json.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError
from zoo.families import family_of
from zoo.tasks.causal_lm import CausalLM

log = logging.getLogger("zoo")


def load_pretrained_growing_vocab(model: nn.Module, path: str) -> Optional[str]:
    """Copy a zoo checkpoint's weights into `model`, whose vocabulary may be larger; returns its tokenizer."""
    from zoo.checkpoint import model_from_checkpoint, read_checkpoint

    pretrained, _ = model_from_checkpoint(path)
    family, mine = family_of(pretrained).name, family_of(model).name
    if family != mine:
        raise ZooError(f"init_from '{path}' holds a {family} model but the config builds a {mine}; pass a {mine} checkpoint")
    state, target = pretrained.state_dict(), model.state_dict()
    if set(state) != set(target):
        missing = sorted(set(target) ^ set(state))[:3]
        raise ZooError(f"init_from '{path}' does not have the configured model's weights ({missing}); "
                       "use the architecture the checkpoint was trained with")
    grown = []
    for name, value in state.items():
        want = target[name].shape
        if value.shape != want and value.dim() == 2 and value.shape[1:] == want[1:] and value.shape[0] < want[0]:
            extra = value.mean(0, keepdim=True).expand(want[0] - value.shape[0], -1)
            state[name] = torch.cat([value, extra])
            grown.append(name)
        elif value.shape != want:
            raise ZooError(f"init_from '{path}': {name} is {tuple(value.shape)} there but {tuple(want)} here; "
                           "use the architecture the checkpoint was trained with")
    model.load_state_dict(state)
    log.info("init_from: loaded %d weight tensors from '%s'%s", len(state), path,
             f" (vocabulary grown in {', '.join(grown)})" if grown else "")
    return (read_checkpoint(path).get("zoo") or {}).get("tokenizer")


class InstructionTuning(CausalLM):
    """Fine-tune a decoder to answer: the causal LM loss on response tokens of packed chat examples.

    Args:
        model: a decoder-only zoo model (GPT, LLaMA-style GPT).
        init_from: a zoo `.ckpt` (e.g. the demo's) to start from; None trains from scratch.
        sample_question: asked through the chat template at the end of each validation ("" to skip).
        (the rest as in `CausalLM`; `lora:` trains adapters instead of the whole model.)
    """

    def __init__(self, model: nn.Module, init_from: Optional[str] = None,
                 sample_question: str = "What does the Python documentation say about assert?", **kwargs):
        kwargs.setdefault("sample_prompt", "")
        super().__init__(model, **kwargs)
        self.init_from, self.sample_question = init_from, sample_question
        self.pretrained_tokenizer = load_pretrained_growing_vocab(model, init_from) if init_from else None
        self.chat_template = None  # the data module's (zoo.data.chat_template.ChatTemplate), set in setup

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        if self.pretrained_tokenizer:
            from tokenizers import Tokenizer

            theirs = Tokenizer.from_str(self.pretrained_tokenizer).get_vocab()
            mine = dm.tokenizer.get_vocab()
            if any(mine.get(token) != i for token, i in theirs.items()):
                raise ZooError(f"the data module's tokenizer is not the one {self.init_from} was trained with; "
                               f"set --data.init_args.tokenizer {self.init_from}")
        self.chat_template = getattr(dm, "chat_template", None)  # an InstructionDataModule's
        if self.sample_question and self.chat_template is not None:
            self.sample_prompt = self.chat_template.render([{"role": "user", "content": self.sample_question}],
                                                              add_generation_prompt=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.chat_template is not None:
            checkpoint["zoo"]["chat_template"] = self.chat_template.to_meta()

    @staticmethod
    def _packing(batch: dict) -> dict:
        return {k: batch[k] for k in ("position_ids", "segment_ids") if k in batch}

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"), **self._packing(batch))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)
        return loss, logits

    def _train_loss(self, batch: dict) -> torch.Tensor:
        if self.fused_loss:
            return self.model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"],
                              **self._packing(batch))
        return self._loss(batch)[0]
