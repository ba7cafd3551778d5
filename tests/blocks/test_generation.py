"""Decoding: the KV cache changes speed, never tokens; sampling filters do what they say."""

import pytest
import torch

from zoo.errors import ZooError
from zoo.generation import filter_logits, generate
from zoo.models import GPT, GPTConfig

VARIANTS = {
    "gpt2": dict(),
    "llama": dict(position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", n_kv_head=2, bias=False,
                  tie_embeddings=False),
    "mistral-window": dict(position="rope", norm="rmsnorm", n_kv_head=1, window=5),
    "alibi": dict(position="alibi"),
}


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, max_seq_len=48, d_model=32, n_layer=2, n_head=4, init_std=0.3, **kw)).eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_greedy_with_cache_equals_without(variant):
    model = tiny(**VARIANTS[variant])
    prompt = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    a = generate(model, prompt, max_new_tokens=20, temperature=0, use_cache=True)
    b = generate(model, prompt, max_new_tokens=20, temperature=0, use_cache=False)
    assert a.shape == (2, 26) and torch.equal(a, b)


def test_left_padded_batch_matches_single_prompts():
    model = tiny(position="rope", norm="rmsnorm")
    p1, p2 = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10]])
    batch = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    out = generate(model, batch, attention_mask=mask, max_new_tokens=6, temperature=0)
    assert torch.equal(out[0, 4:], generate(model, p1, max_new_tokens=6, temperature=0)[0, 4:])
    assert torch.equal(out[1, 4:], generate(model, p2, max_new_tokens=6, temperature=0)[0, 2:])


def test_sampling_is_seeded():
    model = tiny()
    prompt = torch.tensor([[1, 2, 3]])
    def draw(seed):
        return generate(model, prompt, max_new_tokens=10, temperature=1.0, top_k=20,
                        generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    greedy = generate(model, prompt, max_new_tokens=10, temperature=0)
    samples = [draw(seed) for seed in range(8, 12)]
    assert any(not torch.equal(s, draw(7)) for s in samples)  # the seed matters
    assert any(not torch.equal(s, greedy) for s in samples)  # and it does sample


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 ≤ 0.5 + 0.3


def test_prompt_longer_than_context_is_a_clear_error():
    model = tiny()
    with pytest.raises(ZooError, match="context is 48"):
        generate(model, torch.zeros(1, 60, dtype=torch.long), max_new_tokens=1)


def test_generation_stops_at_context_end():
    out = generate(tiny(), torch.zeros(1, 40, dtype=torch.long), max_new_tokens=100, temperature=0)
    assert out.shape[1] == 48
