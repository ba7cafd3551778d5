"""`zoo inspect`: one forward pass walked through as a textbook does (Vaswani et al., 2017, §3): the
tokens and their ids, the embedding tables and embedded vectors, each layer's normalised input,
queries, keys and values, the scores scale·QKᵀ + bias + mask and their softmax for a chosen layer and
head, the MLP, and the top-k predictions with their probabilities.

The model is not changed. Forward hooks read every module's input and output, and for that one pass
the attention modules run their `eager` backend (`Attention.record_weights`), whose
`zoo.blocks.attention.score_recorder` hands over Q, K, V, the scores and the weights exactly as they
were used: with RoPE applied, ALiBi or T5 biases added and masked keys at -inf.
"""

from zoo.inspection.record import AttentionRecord, Pass, Recording
from zoo.inspection.report import inspect_model

__all__ = ["AttentionRecord", "Pass", "Recording", "inspect_model"]
