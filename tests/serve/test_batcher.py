"""The dynamic batcher alone: requests that arrive together are decoded together, and a request that
fails inside a batch fails alone — the others of its batch still get their texts."""

import asyncio

import pytest
import torch

from tests.test_generation import word_tokenizer
from zoo.errors import ZooError
from zoo.generation import Request, generate_batch
from zoo.models import GPT, GPTConfig

pytest.importorskip("fastapi")


def test_a_bad_request_fails_alone():
    from zoo.serve.engine import Batcher

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, max_seq_len=16, d_model=32, n_layer=1, n_head=4, init_std=0.3)).eval()
    tok = word_tokenizer()
    sizes = []
    batcher = Batcher(model, tok, max_batch_size=8, wait_ms=200, observe_batch=sizes.append)
    good = [Request("w5 w6", max_tokens=4), Request("w7", max_tokens=3, temperature=1.0, seed=2)]
    bad = Request("w5 " * 20, max_tokens=2)  # longer than the context (16): generate_batch raises

    async def run():
        jobs = [batcher.submit(r) for r in (good[0], bad, good[1])]
        out = []
        for job in jobs:
            while True:
                event = await asyncio.wait_for(job.events.get(), 60)
                if isinstance(event, Exception) or event[1] is not None:
                    out.append(event if isinstance(event, Exception) else event[1])
                    break
        return out

    try:
        first, failed, second = asyncio.run(run())
    finally:
        batcher.close()
    assert max(sizes) == 2  # the two good ones were decoded together
    assert isinstance(failed, ZooError) and "context is 16" in str(failed)
    assert first.token_ids == generate_batch(model, tok, [good[0]])[0].token_ids
    assert second.token_ids == generate_batch(model, tok, [good[1]])[0].token_ids
