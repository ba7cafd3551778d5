"""Packed instruction blocks never attend across examples: each example's logits in a packed block
equal its logits alone, in every attention backend (triton under TRITON_INTERPRET=1 on CPU)."""

import pytest
import torch

from zoo.blocks import set_attention_impl
from zoo.data.instructions import pack_examples
from zoo.models import GPT
from zoo.models.gpt import GPTConfig

CONFIGS = {
    "gpt2": dict(position="learned"),
    "llama": dict(position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", n_kv_head=1, bias=False,
                  tie_embeddings=False),
}


def tiny(kind: str) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, max_seq_len=48, d_model=32, n_layer=2, n_head=2, init_std=0.2, **CONFIGS[kind])
    return GPT(cfg).eval()


def examples():
    g = torch.Generator().manual_seed(1)
    lengths = (9, 14, 6, 17)
    return [(torch.randint(0, 64, (n,), generator=g).tolist(), [False] * 3 + [True] * (n - 3)) for n in lengths]


@pytest.mark.parametrize("impl", ["eager", "torch", "triton"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_packed_logits_equal_each_example_alone(kind, impl):
    model = set_attention_impl(tiny(kind), impl)
    exs = examples()
    (block,) = pack_examples(exs, block_size=48, pad_id=0)
    assert block["segment_ids"].max() == 4  # four examples and a padding segment
    with torch.no_grad():
        packed = model(block["input_ids"][None], position_ids=block["position_ids"][None],
                       segment_ids=block["segment_ids"][None])[0]  # (T, V)
        unmasked = model(block["input_ids"][None], position_ids=block["position_ids"][None])[0]
        for s in range(4):
            where = (block["segment_ids"] == s).nonzero().flatten()
            ids = block["input_ids"][where]
            alone = model(ids[None])[0]
            assert torch.allclose(packed[where], alone, atol=1e-5, rtol=1e-5), (kind, impl, s)
            if where[0] > 0:  # without segment ids, a later example sees the earlier ones: the test can fail
                assert not torch.allclose(unmasked[where], alone, atol=1e-3)


def test_packed_loss_counts_response_tokens_only():
    model = tiny("gpt2")
    exs = examples()
    (block,) = pack_examples(exs, block_size=48, pad_id=0)
    batch = {k: v[None] for k, v in block.items()}
    loss = model(batch["input_ids"], labels=batch["labels"], position_ids=batch["position_ids"],
                 segment_ids=batch["segment_ids"])
    # the same loss from each example alone, over its response targets only
    total, count = 0.0, 0
    for ids, response in exs:
        logits = model(torch.tensor(ids[:-1])[None])[0]
        targets = torch.tensor(ids[1:])
        keep = torch.tensor(response[1:])
        total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
        count += int(keep.sum())
    assert count == int((batch["labels"] != -100).sum()) == sum(len(ids) - 3 for ids, _ in exs)
    assert torch.allclose(loss, total / count, atol=1e-5)
    # prompt tokens carry no loss: changing a prompt *target* leaves the loss unchanged
    ids, response = exs[0]
    changed = [(ids[:1] + [(ids[1] + 1) % 64] + ids[2:], response)] + exs[1:]
    (block2,) = pack_examples(changed, block_size=48, pad_id=0)
    assert torch.equal(block2["labels"], block["labels"])
