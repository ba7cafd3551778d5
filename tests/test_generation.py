"""Decoding in one place (zoo.generation): a batch of prompts of different lengths and settings gives
each row what it gives alone, for every generating family; per-row stopping (eos, stop strings, max
tokens); a finished row leaves the batch; beam search for decoder-only models equals Hugging Face's."""

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

import zoo
from zoo.generation import Request, generate, generate_batch
from zoo.models import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

V = 40
GPTS = {
    "gpt-learned": dict(),
    "gpt-rope-gqa": dict(position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", n_kv_head=2, bias=False,
                         tie_embeddings=False),
    "gpt-alibi": dict(position="alibi"),
}


def word_tokenizer() -> Tokenizer:
    tok = Tokenizer(WordLevel({f"w{i}": i for i in range(V)}, unk_token="w2"))
    tok.pre_tokenizer = WhitespaceSplit()
    return tok


def build(family: str, tmp_path_factory):
    if family in GPTS:
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=V, max_seq_len=64, d_model=32, n_layer=2, n_head=4, init_std=0.3,
                             **GPTS[family])).eval()
    from tests.models.test_seq2seq_generate import tiny_bart, tiny_t5

    path = tmp_path_factory.mktemp(family)
    (tiny_t5() if family == "t5" else tiny_bart()).save_pretrained(path)
    return zoo.from_hf(path).eval()


@pytest.fixture(scope="module", params=sorted(GPTS) + ["t5", "bart"])
def model(request, tmp_path_factory):
    return build(request.param, tmp_path_factory)


PROMPTS = ["w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w20 w3 w31 w17", "w9", "w33 w34 w35 w36 w37 w38 w39 w4 w5 w6"]


def requests(sampled: bool) -> list[Request]:
    """Five prompts of different lengths, each with its own length, and (sampled) its own settings and seed."""
    settings = [dict(temperature=1.3, top_k=None), dict(temperature=0.9, top_k=8), dict(temperature=1.0, top_p=0.8),
                dict(temperature=0.0), dict(temperature=1.5, top_k=20, top_p=0.9)]
    return [Request(p, max_tokens=6 + 2 * i, seed=100 + i, **(settings[i] if sampled else {}))
            for i, p in enumerate(PROMPTS)]


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_batch_equals_one_by_one(model, sampled):
    tok = word_tokenizer()
    reqs = requests(sampled)
    together = generate_batch(model, tok, reqs, eos_token_id=-1)
    alone = [generate_batch(model, tok, [r], eos_token_id=-1)[0] for r in reqs]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [len(c.token_ids) for c in together] == [r.max_tokens for r in reqs]  # each row its own length
    assert all(c.finish_reason == "length" for c in together)
    if sampled:  # it did sample: the seeds differ from greedy
        greedy = generate_batch(model, tok, requests(False), eos_token_id=-1)
        assert any(a.token_ids != b.token_ids for a, b in zip(together, greedy))


def test_seed_decides_the_sample(model):
    tok = word_tokenizer()
    base = dict(prompt=PROMPTS[0], max_tokens=10, temperature=1.5)
    a, b, c = generate_batch(model, tok, [Request(seed=1, **base), Request(seed=1, **base), Request(seed=2, **base)])
    assert a.token_ids == b.token_ids != c.token_ids


def test_eos_stops_its_row_only(model):
    tok = word_tokenizer()
    reqs = requests(False)
    free = generate_batch(model, tok, reqs, eos_token_id=-1)
    eos = free[0].token_ids[2]  # row 0 emits it at its third step
    out = generate_batch(model, tok, reqs, eos_token_id=eos)
    first = free[0].token_ids.index(eos)
    assert out[0].token_ids == free[0].token_ids[:first + 1] and out[0].finish_reason == "stop"
    for row, ref in zip(out[1:], free[1:]):  # the others run on, each to its own eos or length
        cut = ref.token_ids.index(eos) + 1 if eos in ref.token_ids else len(ref.token_ids)
        assert row.token_ids == ref.token_ids[:cut]


def test_stop_strings_cut_the_text_and_free_the_row(model):
    tok = word_tokenizer()
    reqs = requests(False)
    free = generate_batch(model, tok, reqs, eos_token_id=-1)
    word = free[1].text.split()[3]
    reqs[1].stop = [word, "never-emitted"]
    seen = []
    streamed = {}

    def on_text(row, delta, done):
        streamed[row] = streamed.get(row, "") + delta
        if done is not None:
            seen.append(row)
        return False

    out = generate_batch(model, tok, reqs, eos_token_id=-1, on_text=on_text)
    assert out[1].finish_reason == "stop" and word not in out[1].text
    assert free[1].text.startswith(out[1].text) and len(out[1].token_ids) <= 4
    assert [c.token_ids for i, c in enumerate(out) if i != 1] == [c.token_ids for i, c in enumerate(free) if i != 1]
    assert sorted(seen) == list(range(5)) and all(streamed[i] == out[i].text for i in range(5))


def test_a_finished_row_leaves_the_batch():
    """The model sees the batch shrink as soon as rows finish (by length, or cancelled by on_text)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, max_seq_len=64, d_model=32, n_layer=1, n_head=4)).eval()
    sizes = []
    model.register_forward_hook(lambda m, args, out: sizes.append(out.shape[0]))
    reqs = [Request("w1 w2", max_tokens=n) for n in (2, 4, 6)]
    out = generate_batch(model, word_tokenizer(), reqs, eos_token_id=-1, on_text=lambda r, d, c: r == 2)
    assert sizes == [3, 2, 1, 1]  # row 2 cancelled after its first token, row 0 after 2, row 1 alone to 4
    assert [c.finish_reason for c in out] == ["length", "length", "cancelled"]
    assert [len(c.token_ids) for c in out] == [2, 4, 1]


def test_echo_and_prompt_too_long():
    model = build("gpt-learned", None)
    tok = word_tokenizer()
    [c] = generate_batch(model, tok, [Request("w5 w6", max_tokens=3)], echo=True)
    assert c.text.startswith("w5 w6 ") and len(c.text.split()) == 5
    [c] = generate_batch(model, tok, [Request("w5 " * 60, max_tokens=30)])
    assert len(c.token_ids) == 4 and c.finish_reason == "length"  # the context (64) ends it
    with pytest.raises(zoo.errors.ZooError, match="context is 64"):
        generate_batch(model, tok, [Request("w5 " * 65)])


def test_gpt_beam_search_matches_hf(tmp_path):
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.5)
    hf = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="eager").eval()
    hf.save_pretrained(tmp_path)
    ours = zoo.from_hf(tmp_path).eval()
    ids = torch.randint(3, V, (3, 6), generator=torch.Generator().manual_seed(5))
    free = generate(ours, ids, max_new_tokens=10, temperature=0)
    eos = int(free[0, 9])
    for early in (False, True):
        mine = generate(ours, ids, max_new_tokens=10, num_beams=3, eos_token_id=eos, temperature=0)
        theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), num_beams=3, max_new_tokens=10, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos, early_stopping=early, length_penalty=1.0)
        assert torch.equal(mine, theirs), early
    beam = generate(ours, ids, max_new_tokens=10, num_beams=3, temperature=0, eos_token_id=None)
    assert not torch.equal(beam, free)  # the search does something here
    one = [generate(ours, ids[i:i + 1], max_new_tokens=10, num_beams=3, temperature=0) for i in range(3)]
    assert torch.equal(beam, torch.cat(one))


@pytest.mark.parametrize("family", sorted(GPTS))
def test_rows_joining_a_running_batch_decode_as_alone(family):
    """Continuous batching: rows admitted while others run (left-padded into the cache) get the tokens
    they get alone; finished rows leave."""
    from zoo.generation.session import Session

    model = build(family, None)
    tok = word_tokenizer()
    reqs = requests(True)
    alone = [generate_batch(model, tok, [r], eos_token_id=-1)[0].token_ids for r in reqs]
    session = Session(model, tok, eos_token_id=-1)
    got = {}

    def collect(i):
        return lambda delta, done: got.__setitem__(i, done.token_ids) if done is not None else False

    session.add(reqs[:2], [collect(0), collect(1)])
    for step in range(12):
        if step == 2:
            session.add([reqs[2]], [collect(2)])  # a longer prompt joins: the batch is re-padded
        if step == 4:
            session.add(reqs[3:], [collect(3), collect(4)])
        if len(session):
            session.step()
    while len(session):
        session.step()
    assert [got[i] for i in range(5)] == alone
