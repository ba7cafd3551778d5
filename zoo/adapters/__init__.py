"""Adapters: LoRA from outside the model (`add_lora`, `merge_lora`), PEFT's format both ways
(`load_peft`, `save_peft`), and the `lora:` option of the tasks (`LoRAConfig`)."""

from zoo.adapters.lora import (
    ALL_LINEAR,
    LoRAConfig,
    LoRALinear,
    adapter_state_dict,
    add_lora,
    has_lora,
    lora_layers,
    merge_lora,
)
from zoo.adapters.peft import load_peft, peft_adapter, save_peft

__all__ = ["ALL_LINEAR", "LoRAConfig", "LoRALinear", "adapter_state_dict", "add_lora", "has_lora", "load_peft",
           "lora_layers", "merge_lora", "peft_adapter", "save_peft"]
