"""LightningModules: objectives, metrics, optimizers. Each takes a model by dependency injection."""

from zoo.tasks.base import Task, lr_multiplier, parameter_groups
from zoo.tasks.causal_lm import CausalLM

__all__ = ["CausalLM", "Task", "lr_multiplier", "parameter_groups"]
