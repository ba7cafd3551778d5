"""One file per family: a typed config and a pure nn.Module (no Lightning here)."""

from zoo.models.bart import Bart, BartConfig
from zoo.models.bert import Bert, BertConfig
from zoo.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from zoo.models.encoder_decoder import EncoderDecoderLM
from zoo.models.gpt import GPT, GPTConfig
from zoo.models.t5 import T5, T5Config

# family name -> (model class, config class); checkpoints and HF interop look families up here.
FAMILIES = {"gpt": (GPT, GPTConfig), "clip": (CLIP, CLIPConfig),
            "bert": (Bert, BertConfig), "t5": (T5, T5Config), "bart": (Bart, BartConfig)}

__all__ = [
    "Bart", "BartConfig", "Bert", "BertConfig", "CLIP", "CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig",
    "EncoderDecoderLM", "FAMILIES", "GPT", "GPTConfig", "T5", "T5Config",
]
