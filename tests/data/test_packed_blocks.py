"""Packed next-token blocks: shapes, the one-token shift, offsets, pickling a memmap."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from zoo.data.packing import PackedBlocks
from zoo.errors import ZooError


def test_blocks_are_contiguous_and_labels_shift_by_one():
    blocks = PackedBlocks(np.arange(100, dtype=np.uint16), block_size=8)
    assert len(blocks) == (100 - 1) // 8 == 12
    first, second = blocks[0], blocks[1]
    assert first["input_ids"].dtype == torch.int64 and first["labels"].dtype == torch.int64
    assert first["input_ids"].tolist() == list(range(0, 8))
    assert first["labels"].tolist() == list(range(1, 9))
    assert second["input_ids"].tolist() == list(range(8, 16))
    last = blocks[len(blocks) - 1]
    assert last["labels"][-1].item() <= 99
    with pytest.raises(IndexError):
        blocks[len(blocks)]


def test_exact_fit_uses_every_token():
    blocks = PackedBlocks(np.arange(17), block_size=8)  # 2 blocks need 2*8+1 tokens
    assert len(blocks) == 2 and blocks[1]["labels"][-1].item() == 16


def test_offset_moves_block_boundaries():
    blocks = PackedBlocks(np.arange(50), block_size=8, offset=3)
    assert blocks[0]["input_ids"][0].item() == 3
    assert len(blocks) == (50 - 3 - 1) // 8


def test_targets_are_all_labels_in_order():
    blocks = PackedBlocks(np.arange(40), block_size=6)
    labels = torch.cat([blocks[i]["labels"] for i in range(len(blocks))]).numpy()
    assert np.array_equal(blocks.targets(), labels)


def test_batches_through_a_dataloader():
    loader = DataLoader(PackedBlocks(np.arange(1000) % 300, block_size=16), batch_size=4)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 16)
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])


def test_too_few_tokens_is_a_clear_error():
    with pytest.raises(ZooError) as excinfo:
        PackedBlocks(np.arange(8), block_size=8, name="val")
    message = str(excinfo.value)
    assert "val split has only 8 tokens" in message and "--data.block_size" in message


def test_memmap_pickles_as_a_reference(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(100_000, dtype=np.uint32).tofile(path)
    blocks = PackedBlocks(np.memmap(path, dtype=np.uint32, mode="r"), block_size=32)
    blob = pickle.dumps(blocks)
    assert len(blob) < 10_000  # not the 400 KB of data
    clone = pickle.loads(blob)
    assert isinstance(clone.tokens, np.memmap)
    assert torch.equal(clone[5]["labels"], blocks[5]["labels"])
