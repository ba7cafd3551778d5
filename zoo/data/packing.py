"""Packed fixed-length blocks for next-token prediction (as in GPT-2 and nanoGPT).

The documents of a split are one stream of token ids (end-of-text between documents). Block
``i`` reads ``block_size + 1`` tokens starting at ``offset + i * block_size``; the inputs are
the first ``block_size`` of them and the labels the last ``block_size``, so ``labels[t]`` is
the token that follows ``input_ids[t]``. Blocks do not overlap, and every label is predicted
exactly once per epoch. The stream's tail that does not fill a block is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import ZooError


class PackedBlocks(Dataset):
    """``{"input_ids": LongTensor[T], "labels": LongTensor[T]}`` blocks over a token array.

    Args:
        tokens: the split's token ids, usually a read-only ``numpy.memmap``.
        block_size: T, the tokens per example.
        offset: where the first block starts (``0 <= offset < block_size``), to show the model
            different block boundaries in different epochs.
        name: the split's name, for the error message when it is too short.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, offset: int = 0, name: str = "train"):
        if block_size < 1:
            raise ZooError(f"block_size={block_size} must be at least 1; set --data.block_size")
        self.tokens = tokens
        self.block_size = block_size
        self.offset = offset % block_size
        self.name = name
        if len(self) == 0:
            raise ZooError(
                f"the {name} split has only {len(tokens)} tokens, too few for one block of block_size={block_size} "
                "(+1 for the shifted labels); lower --data.block_size, raise --data.val_fraction or add text"
            )

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - self.offset - 1) // self.block_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} out of range for {len(self)} blocks")
        start = self.offset + index * self.block_size
        chunk = torch.from_numpy(np.asarray(self.tokens[start : start + self.block_size + 1], dtype=np.int64))
        return {"input_ids": chunk[:-1], "labels": chunk[1:]}

    def targets(self) -> np.ndarray:
        """Every label of every block, in order: the tokens a validation loss averages over."""
        start = self.offset + 1
        return np.asarray(self.tokens[start : start + len(self) * self.block_size])

    # A memmap pickles as a full in-memory copy; workers started with `spawn` reopen the file.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self.tokens, np.memmap) and self.tokens.filename is not None:
            state["tokens"] = (self.tokens.filename, self.tokens.dtype.str, self.tokens.offset, self.tokens.shape)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["tokens"], tuple):
            filename, dtype, offset, shape = state["tokens"]
            state["tokens"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
        self.__dict__.update(state)
