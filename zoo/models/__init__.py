"""One file per family: a typed config and a pure nn.Module (no Lightning here)."""

from zoo.models.gpt import GPT, GPTConfig

# family name -> (model class, config class); checkpoints and HF interop look families up here.
FAMILIES = {"gpt": (GPT, GPTConfig)}

__all__ = ["FAMILIES", "GPT", "GPTConfig"]
