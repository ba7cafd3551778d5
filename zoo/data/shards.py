"""Sharded token files written by ``zoo data prepare``, read memory-mapped for training.

``ShardedTokens`` is one long read-only token stream over many ``.bin`` shards: slicing reads
only the shards a slice touches (memory-mapped, so only the pages read are loaded), its length
and indexing match a flat array, and it pickles as file names, so DataLoader workers and DDP
ranks reopen the files instead of copying tokens. Memory stays flat as the corpus grows: the
page cache holds what was read, the process holds the file handles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError

SHARDS_FILE = "shards.json"


class ShardedTokens:
    """The concatenation of several token files, indexable and sliceable like one array."""

    def __init__(self, files: list[str], dtype: str):
        self.files, self.dtype = list(files), np.dtype(dtype)
        self._maps = [np.memmap(f, dtype=self.dtype, mode="r") for f in self.files]
        self._starts = np.cumsum([0] + [len(m) for m in self._maps])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("ShardedTokens slices take a step of 1")
            return self._read(start, stop)
        index = int(key) + (len(self) if int(key) < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(f"token {key} out of range for {len(self)} tokens")
        return self._read(index, index + 1)[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        parts, shard = [], first
        while start < stop:
            base = int(self._starts[shard])
            end = min(stop, int(self._starts[shard + 1]))
            parts.append(self._maps[shard][start - base : end - base])
            start, shard = end, shard + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(0, len(self))
        return out.astype(dtype) if dtype is not None else out

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files, "dtype": self.dtype.str}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["files"], state["dtype"])


def read_index(folder: str | Path) -> dict[str, Any]:
    """``shards.json`` of a prepared folder; a ZooError naming the fix when it is missing."""
    root = Path(folder).expanduser()
    index = root / SHARDS_FILE
    if not index.is_file():
        raise ZooError(f"{root} has no {SHARDS_FILE}: it is not a finished `zoo data prepare` output; "
                       "run (or rerun, to resume) `zoo data prepare -c configs/data/<name>.yaml` into it")
    return json.loads(index.read_text())


def open_split(folder: str | Path, split: str) -> ShardedTokens:
    """The ``train`` or ``val`` token stream of a prepared folder."""
    root, index = Path(folder).expanduser(), read_index(folder)
    shards = index["splits"].get(split) or []
    if not shards:
        raise ZooError(f"{root} has no {split} tokens; raise tokenize.val_fraction in the data YAML (or add text) "
                       "and rerun `zoo data prepare` into a new output folder")
    return ShardedTokens([str(root / s["file"]) for s in shards], index["dtype"])


def tokenizer_file(folder: str | Path) -> Path:
    return Path(folder).expanduser() / read_index(folder)["tokenizer"]
