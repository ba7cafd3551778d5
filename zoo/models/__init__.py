"""One file per family: a typed config and a pure nn.Module (no Lightning here)."""

from zoo.models.bart import Bart, BartConfig
from zoo.models.bert import Bert, BertConfig
from zoo.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from zoo.models.encoder_decoder import EncoderDecoderLM
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.t5 import T5, T5Config
from zoo.models.base import (
    INTERFACES, Capability, CausalLMModel, FeatureModel, ImageTextModel, MaskedLMModel, Seq2SeqModel, ZooModel,
)

# The family registry (what each family is and can do) is `zoo.families`.
__all__ = [
    "INTERFACES", "Capability", "CausalLMModel", "FeatureModel", "ImageTextModel", "MaskedLMModel", "Seq2SeqModel",
    "ZooModel", "Bart", "BartConfig", "Bert", "BertConfig", "CLIP", "CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig",
    "EncoderDecoderLM", "GPT", "GPTConfig", "T5", "T5Config",
]
