"""`zoo inspect`: one forward pass walked through as a textbook does (Vaswani et al., 2017, §3): the
tokens and their ids, the embedding tables and embedded vectors, each layer's normalised input,
queries, keys and values, the scores scale·QKᵀ + bias + mask and their softmax for a chosen layer and
head, the MLP, and the top-k predictions with their probabilities.

The model is not changed. Forward hooks read every module's input and output; for that one pass the
attention modules run their `eager` backend, and a hook on each attention's `ScaledDotProduct`
reads Q, K, V exactly as they were used (RoPE applied, grouped heads unrepeated), from which the
scores (ALiBi or T5 biases added, masked keys at -inf) and the weights are computed again by the
same textbook formula.
"""

from zoo.inspection.record import AttentionRecord, Pass, Recording
from zoo.inspection.report import inspect_model

__all__ = ["AttentionRecord", "Pass", "Recording", "inspect_model"]
