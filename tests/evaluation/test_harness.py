"""`ZooLM` scores what the harness's own Hugging Face wrapper (`HFLM`) scores on the `zoo.to_hf` export of
the same model: `lm_eval.simple_evaluate` on the offline tasks, and request by request.

Both run float32 on CPU; the two implementations (zoo's GPT/T5 and transformers') differ by float
rounding only, so scores are compared at a relative 1e-5 (they agree to every printed digit at equal
batch size). Across batch sizes the harness itself moves by padding-shaped rounding: same tolerance."""

from __future__ import annotations

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="the eval extra (pip install 'zoo[eval]')")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from zoo.checkpoint import load_model  # noqa: E402
from zoo.evaluation.harness import ZooLM  # noqa: E402
from zoo.evaluation.local_tasks import LOCAL_TASKS, task_manager  # noqa: E402
from zoo.interop.hf import to_hf  # noqa: E402

pytestmark = pytest.mark.xdist_group("evaluation")
REL = 1e-5


def scrambled(model, seed=0):
    """Random weights with a larger spread than a 2-step fit, so that the choices differ in score."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 and (p == 1).all() else 0.0))
    return model


def export_pair(fitted, tmp_path_factory, name):
    """(zoo model, tokenizer, HF directory) of the same random model with its trained tokenizer."""
    model, tok = load_model(str(fitted(name)))
    scrambled(model)
    return model, tok, to_hf(model, tmp_path_factory.mktemp(f"hf-{name}"), tokenizer=tok)


@pytest.fixture(scope="module")
def gpt_pair(fitted, tmp_path_factory):
    return export_pair(fitted, tmp_path_factory, "gpt")


@pytest.fixture(scope="module", params=["gpt", "llama"])
def decoder_pair(request, fitted, tmp_path_factory, gpt_pair):
    """GPT-2 style, and LLaMA/Mistral style (RoPE, RMSNorm, SwiGLU, grouped KV, sliding window 4)."""
    return gpt_pair if request.param == "gpt" else export_pair(fitted, tmp_path_factory, "llama")


def flat(results):
    return {(task, key): value for task, metrics in results["results"].items() for key, value in metrics.items()
            if isinstance(value, float)}


def run(lm, task_cache):
    manager = task_manager(task_cache, hub=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(LOCAL_TASKS), task_manager=manager, limit=12,
                                  log_samples=False, bootstrap_iters=0)
    return flat(out)


def test_simple_evaluate_equals_hflm(gpt_pair, task_cache):
    model, tok, directory = gpt_pair
    theirs = run(HFLM(pretrained=str(directory), batch_size=4, device="cpu"), task_cache)
    ours = run(ZooLM(model, tok, batch_size=4), task_cache)
    assert set(ours) == set(theirs) and len(ours) >= 5  # word/byte perplexity, bits per byte, acc, acc_norm
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], rel=REL), key
    # a random model is no better than chance, but its choices differ: the scores are not all ties
    assert len({v for (task, _), v in ours.items() if task == "zoo_pydoc_topic"}) >= 1
    assert ours == pytest.approx(run(ZooLM(model, tok, batch_size=1), task_cache), rel=REL)


def requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_requests_equal_hflm(decoder_pair):
    """Each request type on awkward inputs: empty context (prefix token), trailing spaces, a text far
    longer than the 32-token context (rolling windows), and greedy generation with stop strings."""
    model, tok, directory = decoder_pair
    hf, ours = HFLM(pretrained=str(directory), batch_size=3, device="cpu"), ZooLM(model, tok, batch_size=3)
    pairs = [("", "def f(x):"), ("The return statement ", "leaves"), ("a" * 5, " b c"),
             ("x = [1, 2,", " 3]"), ("Long " * 40, "tail")]
    assert [s for s, _ in ours.loglikelihood(requests("loglikelihood", pairs))] == pytest.approx(
        [s for s, _ in hf.loglikelihood(requests("loglikelihood", pairs))], rel=REL)
    texts = [("The for statement is used to iterate over the elements of a sequence. " * 6,), ("short",)]
    assert ours.loglikelihood_rolling(requests("loglikelihood_rolling", texts)) == pytest.approx(
        hf.loglikelihood_rolling(requests("loglikelihood_rolling", texts)), rel=REL)
    gen = [("The ", {"until": ["\n"], "max_gen_toks": 8}), ("import", {"until": ["."], "max_gen_toks": 6})]
    assert ours.generate_until(requests("generate_until", gen)) == hf.generate_until(requests("generate_until", gen))


def test_seq2seq_equals_hflm(fitted, tmp_path):
    """An encoder-decoder (T5): context to the encoder, continuation through the decoder."""
    model, tok = load_model(str(fitted("t5")))
    scrambled(model, seed=1)
    directory = to_hf(model, tmp_path / "hf-t5", tokenizer=tok)
    hf = HFLM(pretrained=str(directory), batch_size=2, device="cpu", backend="seq2seq")
    ours = ZooLM(model, tok, batch_size=2)
    pairs = [("The with statement", " is used"), ("Which topic?", " dict"), ("x", " y z")]
    assert [s for s, _ in ours.loglikelihood(requests("loglikelihood", pairs))] == pytest.approx(
        [s for s, _ in hf.loglikelihood(requests("loglikelihood", pairs))], rel=REL)
