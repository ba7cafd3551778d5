"""Encoder-decoder generation (T5, BART): greedy and beam search, with and without the KV cache,
token for token equal to Hugging Face's `generate` on tiny random models."""

import pytest
import torch

import zoo

transformers = pytest.importorskip("transformers")

from tests.models.test_hf_t5 import redraw  # noqa: E402

MAX_NEW = 12


def tiny_t5():
    cfg = transformers.T5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                dropout_rate=0.0, feed_forward_proj="gated-gelu", decoder_start_token_id=0)
    # a large std keeps the random model from repeating one token forever
    return redraw(transformers.T5ForConditionalGeneration._from_config(cfg, attn_implementation="eager"), 0.8, seed=2)


def tiny_bart():
    torch.manual_seed(1)
    cfg = transformers.BartConfig(vocab_size=40, d_model=32, encoder_layers=2, decoder_layers=2,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                                  activation_dropout=0.0, init_std=0.5)
    return transformers.BartForConditionalGeneration._from_config(cfg, attn_implementation="eager").eval()


@pytest.fixture(scope="module", params=["t5", "bart"])
def pair(request, tmp_path_factory):
    """(HF model, our model, input ids, attention mask, eos id), eos chosen so decoding does stop early."""
    hf = tiny_t5() if request.param == "t5" else tiny_bart()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours = zoo.from_hf(path)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 40, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 5:] = 0  # encoder padding on two rows
    free = ours.generate(ids, mask, max_new_tokens=MAX_NEW, eos_token_id=-1)  # -1: never emitted
    eos = int(free[0, 5])  # a token row 0 emits mid-way: it must stop there
    ours.config.eos_token_id = eos
    return hf, ours, ids, mask, eos


def hf_generate(hf, ids, mask, eos, num_beams, **kw):
    """HF generation with nothing that would alter scores or stop early besides eos."""
    c = hf.config
    kw = {"do_sample": False, **kw}
    return hf.generate(input_ids=ids, attention_mask=mask, num_beams=num_beams,
                       max_new_tokens=MAX_NEW, min_length=0, no_repeat_ngram_size=0, repetition_penalty=1.0,
                       forced_bos_token_id=None, forced_eos_token_id=None, eos_token_id=eos,
                       pad_token_id=c.pad_token_id, decoder_start_token_id=c.decoder_start_token_id, **kw)


def after_eos_as_pad(seqs, eos, pad):
    """Positions after each row's first eos set to pad (HF's beam search fills them with eos when pad is 0)."""
    seqs = seqs.clone()
    for row in seqs:
        hits = (row[1:] == eos).nonzero()
        if len(hits):
            row[2 + int(hits[0]):] = pad
    return seqs


def test_greedy_matches_hf_and_cache(pair):
    hf, ours, ids, mask, eos = pair
    cached = ours.generate(ids, mask, max_new_tokens=MAX_NEW)
    uncached = ours.generate(ids, mask, max_new_tokens=MAX_NEW, use_cache=False)
    assert torch.equal(cached, uncached)
    assert (cached[:, 0] == ours.config.decoder_start_token_id).all()
    stop = int((cached[0] == eos).nonzero()[0])  # row 0 emits eos by step 5, then only pads
    assert stop <= 6 and (cached[0, stop + 1:] == ours.config.pad_token_id).all()
    assert torch.equal(cached, hf_generate(hf, ids, mask, eos, num_beams=1))


EARLY_STOP_EOS = 15  # with this eos, both tiny models return different beams for early_stopping True/False


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("which_eos", ["picked", "early-stop-sensitive"])
def test_beam_search_matches_hf_and_cache(pair, early_stopping, which_eos):
    hf, ours, ids, mask, eos = pair
    eos = eos if which_eos == "picked" else EARLY_STOP_EOS
    kw = dict(max_new_tokens=MAX_NEW, num_beams=3, early_stopping=early_stopping, eos_token_id=eos)
    cached = ours.generate(ids, mask, **kw)
    assert torch.equal(cached, ours.generate(ids, mask, use_cache=False, **kw))
    ref = hf_generate(hf, ids, mask, eos, num_beams=3, length_penalty=1.0, early_stopping=early_stopping)
    pad = ours.config.pad_token_id
    assert cached.shape == ref.shape
    assert torch.equal(after_eos_as_pad(cached, eos, pad), after_eos_as_pad(ref, eos, pad))


def test_early_stopping_changes_the_result(pair):
    """Keeps the test above from passing vacuously: the two stopping rules differ on these models."""
    _, ours, ids, mask, _ = pair
    kw = dict(max_new_tokens=MAX_NEW, num_beams=3, eos_token_id=EARLY_STOP_EOS)
    patient = ours.generate(ids, mask, early_stopping=False, **kw)
    eager = ours.generate(ids, mask, early_stopping=True, **kw)
    assert patient.shape != eager.shape or not torch.equal(patient, eager)


def sequence_logprob(model, ids, mask, seqs, eos):
    """Sum of log-probabilities of each generated sequence (through its first eos)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(ids, mask, decoder_input_ids=seqs[:, :-1]).float(), -1)
    tok = seqs[:, 1:]
    lp = logp.gather(-1, tok[..., None]).squeeze(-1)
    ended = (tok == eos).long().cumsum(1)
    keep = (ended == 0) | ((ended == 1) & (tok == eos))
    return (lp * keep).sum(1)


def test_beam_finds_a_sequence_at_least_as_likely_as_greedy(pair):
    _, ours, ids, mask, _ = pair
    free = dict(max_new_tokens=6, eos_token_id=-1)  # fixed length, so raw log-probabilities compare
    greedy = ours.generate(ids, mask, **free)
    beam = ours.generate(ids, mask, num_beams=3, **free)
    assert (sequence_logprob(ours, ids, mask, beam, -1) >= sequence_logprob(ours, ids, mask, greedy, -1) - 1e-5).all()
    assert not torch.equal(beam, greedy)  # the search does something on this model


def test_generate_rejects_bad_arguments(pair):
    _, ours, ids, mask, _ = pair
    with pytest.raises(ValueError, match="num_beams"):
        ours.generate(ids, mask, num_beams=0)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours(ids, mask)


def test_shift_right(pair):
    _, ours, _, _, _ = pair
    c = ours.config
    labels = torch.tensor([[5, 6, 7], [8, -100, -100]])
    expected = torch.tensor([[c.decoder_start_token_id, 5, 6], [c.decoder_start_token_id, 8, c.pad_token_id]])
    assert torch.equal(ours.shift_right(labels), expected)


@pytest.mark.parametrize("kw", [{"temperature": 0.7, "top_k": 10}, {"temperature": 1.3, "top_k": 0, "top_p": 0.8}])
def test_sampling_matches_hf_draw_for_draw(pair, kw):
    """With the same global seed, HF's multinomial sampling and ours draw the same tokens: the same
    temperature → top-k → top-p filtering, one draw per row per step, finished rows padded."""
    hf, ours, ids, mask, eos = pair
    torch.manual_seed(7)
    theirs = hf_generate(hf, ids, mask, eos, num_beams=1, **{**kw, "do_sample": True, "top_p": kw.get("top_p", 1.0)})
    torch.manual_seed(7)
    mine = ours.generate(ids, mask, max_new_tokens=MAX_NEW, do_sample=True, temperature=kw["temperature"],
                         top_k=kw["top_k"] or None, top_p=kw.get("top_p"))
    assert torch.equal(mine, theirs)
    assert not torch.equal(mine, ours.generate(ids, mask, max_new_tokens=MAX_NEW))  # it did sample


def test_sampling_is_seeded_and_differs_from_greedy(pair):
    _, ours, ids, mask, _ = pair

    def draw(seed, use_cache=True):
        g = torch.Generator().manual_seed(seed)
        return ours.generate(ids, mask, max_new_tokens=MAX_NEW, do_sample=True, temperature=1.5,
                             generator=g, use_cache=use_cache)

    assert torch.equal(draw(0), draw(0)) and torch.equal(draw(0), draw(0, use_cache=False))
    greedy = ours.generate(ids, mask, max_new_tokens=MAX_NEW)
    samples = [draw(s) for s in range(1, 5)]
    assert any(not torch.equal(s, greedy) for s in samples)
    assert any(not torch.equal(a, b) for a, b in zip(samples, samples[1:]))


def test_sampling_rejects_beams_and_zero_temperature(pair):
    _, ours, ids, mask, _ = pair
    with pytest.raises(ValueError, match="beam search"):
        ours.generate(ids, mask, num_beams=2, do_sample=True)
    with pytest.raises(ValueError, match="temperature"):
        ours.generate(ids, mask, do_sample=True, temperature=0.0)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny random T5 saved as a Hugging Face directory with a word-level tokenizer.json (w0 … w39)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    path = tmp_path_factory.mktemp("t5-cli")
    tiny_t5().save_pretrained(path)
    tok = Tokenizer(WordLevel({f"w{i}": i for i in range(40)}, unk_token="w2"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    return path


def test_zoo_generate_runs_t5_greedy_by_default_and_samples_when_asked(t5_dir, capsys):
    from zoo.cli import main

    ours = zoo.from_hf(t5_dir)
    prompt = "w5 w9 w11 w30 w7"
    ids = torch.tensor([ours.tokenizer.encode(prompt).ids])

    def cli(*args):
        assert main(["generate", "--model", str(t5_dir), "--prompt", prompt, "--max_new_tokens", "8", *args]) == 0
        return capsys.readouterr().out.strip()

    def text(out):
        return ours.tokenizer.decode(out[0, 1:].tolist())

    greedy = text(ours.generate(ids, max_new_tokens=8))
    assert cli() == greedy == cli("--temperature", "0")
    assert cli("--num_beams", "3") == text(ours.generate(ids, max_new_tokens=8, num_beams=3))
    sampled = text(ours.generate(ids, max_new_tokens=8, do_sample=True, temperature=1.5, top_k=None,
                                 generator=torch.Generator().manual_seed(4)))
    assert cli("--temperature", "1.5", "--top_k", "null", "--seed", "4") == sampled != greedy


def test_zoo_generate_refuses_sampling_with_beams(t5_dir, capsys):
    from zoo.cli import main

    argv = ["generate", "--model", str(t5_dir), "--prompt", "w5 w6", "--temperature", "1", "--num_beams", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--num_beams 1 to sample" in err and len(err.strip().splitlines()) == 1
