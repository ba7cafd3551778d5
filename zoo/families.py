"""The family registry: what each model family is and can do, in one place.

Everything keyed by family — checkpoint loading, Hugging Face import and export, inspection,
parallelism, the tasks, the CLI and the benchmarks — reads a `Family` spec from here. Capabilities
are an explicit, typed set (`zoo.models.base.Capability`), and each one is an interface the model
class implements (a test checks that the two agree).

Adding a family takes one model file (`zoo/models/<name>.py`: config + `ZooModel`), one spec below,
and one converter (`zoo/hf/<name>.py`: `from_hf` and `to_hf`).

Parts that live above `zoo.models` (converters, inspection passes) are named as "module:attribute"
references and imported on first use, so that this module imports only the models.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from zoo.data.tokenizer import TokenizerKind
from zoo.errors import ZooError
from zoo.models import CLIP, GPT, Bart, BartConfig, Bert, BertConfig, CLIPConfig, GPTConfig, T5, T5Config
from zoo.models.base import INTERFACES, Capability, ZooModel

C = Capability


def resolve(ref: str) -> Any:
    """The object a "package.module:attribute" reference names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the key in checkpoints and configs ("gpt", "bert", ...).
        model, config: the `ZooModel` class and its config dataclass.
        capabilities: what its models can do.
        task: the pre-training task (a `zoo.tasks` class name) and `objective`, in words.
        tokenizer: the tokenizer kind its configs train ("bpe", "wordpiece", "unigram").
        hf_model_types: config.json `model_type`s it imports; `hf_import` / `hf_export` the converters
            (`(hf_config, state_dict) -> model` and `(model) -> (hf_config, state_dict)`).
        inspect_pass: `zoo inspect`'s walk for it.
        entry_points: methods other than `forward` that tasks call, which FSDP2 must hook.
        pretrain_config: the CPU-sized pre-training config.
    """

    name: str
    model: type[ZooModel]
    config: type
    capabilities: frozenset[Capability]
    task: str
    objective: str
    tokenizer: TokenizerKind
    hf_model_types: tuple[str, ...]
    hf_import: str
    hf_export: Optional[str]
    inspect_pass: str
    entry_points: tuple[str, ...]
    pretrain_config: str

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def build(self, config: dict | Any) -> ZooModel:
        """A fresh model from a config dataclass or its `asdict` (as checkpoints store it)."""
        return self.model(self.config(**config) if isinstance(config, dict) else config)

    def converter(self, direction: str) -> Callable:
        ref = self.hf_import if direction == "import" else self.hf_export
        if ref is None:
            raise ZooError(f"exporting {self.name} models to Hugging Face format is not supported yet")
        return resolve(ref)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gpt", GPT, GPTConfig, frozenset({C.CAUSAL_LM, C.FEATURES}), "CausalLM", "next-token prediction", "bpe",
           ("gpt2", "llama", "mistral"), "zoo.hf.gpt:convert", "zoo.hf.gpt:export", "zoo.inspection.record:gpt_pass",
           ("features", "hidden_states"), "configs/gpt/nano.yaml"),
    Family("bert", Bert, BertConfig, frozenset({C.MASKED_LM, C.FEATURES}), "MaskedLM",
           "masked LM (15%, whole-word)", "wordpiece", ("bert",), "zoo.hf.bert:convert", "zoo.hf.bert:export",
           "zoo.inspection.record:bert_pass", ("features",), "configs/bert/tiny.yaml"),
    Family("t5", T5, T5Config, frozenset({C.SEQ2SEQ, C.FEATURES}), "Seq2SeqLM", "span corruption (15%, mean span 3)",
           "unigram", ("t5",), "zoo.hf.t5:convert", "zoo.hf.t5:export", "zoo.inspection.record:seq2seq_pass",
           ("features", "generate"), "configs/t5/tiny.yaml"),
    Family("bart", Bart, BartConfig, frozenset({C.SEQ2SEQ, C.FEATURES}), "Seq2SeqLM",
           "text infilling (30%, Poisson spans) + sentence permutation", "bpe", ("bart",), "zoo.hf.bart:convert",
           "zoo.hf.bart:export", "zoo.inspection.record:seq2seq_pass", ("features", "generate"),
           "configs/bart/tiny.yaml"),
    Family("clip", CLIP, CLIPConfig, frozenset({C.IMAGE_TEXT, C.FEATURES}), "Contrastive",
           "contrastive image-text (symmetric InfoNCE)", "bpe", ("clip",), "zoo.hf.clip:convert", "zoo.hf.clip:export",
           "zoo.inspection.record:clip_pass", ("features",), "configs/clip/tiny.yaml"),
)}


def get(name: str) -> Family:
    """The spec of family `name`; a ZooError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ZooError(f"unknown model family {name!r}; zoo has {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> Family:
    """The spec of a model's family (by its class: a model must be one of the registered ones)."""
    for family in FAMILIES.values():
        if isinstance(model, family.model):
            return family
    raise ZooError(f"{type(model).__name__} is not a zoo model; zoo builds {', '.join(FAMILIES)}")


def capabilities(model: nn.Module) -> frozenset[Capability]:
    return family_of(model).capabilities


def can(model: nn.Module, capability: Capability) -> bool:
    """Whether `model` offers `capability`: its family declares it and its class implements it."""
    return isinstance(model, INTERFACES[capability]) and family_of(model).can(capability)


def require(model: nn.Module, capability: Capability, purpose: str) -> None:
    """A ZooError, in one line, when `model` lacks `capability` (needed for `purpose`)."""
    if not can(model, capability):
        family = family_of(model)
        offers = ", ".join(sorted(c.value for c in family.capabilities))
        raise ZooError(f"{purpose} needs a model with {capability.value.replace('_', ' ')}; "
                       f"a {family.name} model offers {offers}")


def by_hf_model_type(model_type: Optional[str]) -> Family:
    for family in FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.hf_model_types)
    raise ZooError(f"model_type '{model_type}' is not supported; zoo loads {', '.join(known)}")
