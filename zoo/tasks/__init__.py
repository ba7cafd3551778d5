"""LightningModules: objectives, metrics, optimizers. Each takes a model by dependency injection."""

from zoo.tasks.base import Task, lr_multiplier, parameter_groups
from zoo.tasks.causal_lm import CausalLM
from zoo.tasks.classification import SequenceClassification
from zoo.tasks.contrastive import Contrastive
from zoo.tasks.distillation import Distillation
from zoo.tasks.instruction import InstructionTuning
from zoo.tasks.masked_lm import MaskedLM
from zoo.tasks.seq2seq_lm import Seq2SeqLM

__all__ = ["CausalLM", "Contrastive", "Distillation", "InstructionTuning", "MaskedLM", "Seq2SeqLM", "SequenceClassification", "Task", "lr_multiplier",
           "parameter_groups"]
