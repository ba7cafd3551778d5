"""`zoo serve --quantize SCHEME`: the served model's stack linears are torchao-quantized after loading,
completions and classifications still answer, /health reports the scheme; a scheme the device lacks,
or quantizing a folder `zoo quantize` already wrote, fails in one line before anything loads or starts."""

import httpx2 as httpx  # the HTTP client the openai package ships with
import pytest
import torch

from tests.serve.conftest import LABELS, Running, gpt_classifier_checkpoint
from zoo.cli import main

pytest.importorskip("torchao")
pytestmark = pytest.mark.xdist_group("serve")

PROMPT = "w5 w6 w7 w8"


def test_serve_quantized_int8_weight(tmp_path):
    from zoo.checkpoint import load_model
    from zoo.generation import generate
    from zoo.serve import create_app

    ckpt = gpt_classifier_checkpoint(tmp_path / "tiny.ckpt")
    running = Running(create_app(str(ckpt), model_name="tiny", log_file=None, feedback_file=str(tmp_path / "f.jsonl"),
                                 quantize="int8-weight"))
    try:
        served = running.state.served
        assert type(served.model.decoder.layers[0].self_attn.o_proj.weight).__name__ == "Int8Tensor"
        assert httpx.get(running.url + "/health").json()["quantization"] == "int8-weight"
        c = running.client()
        out = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
        # the answer is the quantized model's own greedy decode ...
        ids = served.tokenizer.encode(PROMPT).ids
        ref = generate(served.model, torch.tensor([ids]), max_new_tokens=6, temperature=0, eos_token_id=0)
        ref = ref[0, len(ids):].tolist()
        ref = ref[: ref.index(0) + 1] if 0 in ref else ref
        assert out.choices[0].text == served.tokenizer.decode(ref) and out.usage.completion_tokens == len(ref)
        # ... whose logits on the prompt and that answer stay within 5% (relative L2) of the float model's
        float_model, _ = load_model(str(ckpt))
        tokens = torch.tensor([ids + ref])
        with torch.no_grad():
            want, got = float_model.eval()(tokens), served.model(tokens)
        rel = float((got - want).norm() / want.norm())
        assert 0 < rel < 0.05, rel
        r = httpx.post(running.url + "/v1/classifications", json={"model": "tiny", "input": [PROMPT]}, timeout=30)
        assert set(r.json()["data"][0]["probabilities"]) == set(LABELS)  # the float head over the int8 base
    finally:
        running.stop()


def test_unavailable_scheme_fails_in_one_line_and_starts_nothing(tmp_path, capsys, monkeypatch):
    import uvicorn

    import zoo.checkpoint

    ckpt = gpt_classifier_checkpoint(tmp_path / "tiny.ckpt")
    started = []
    monkeypatch.setattr(zoo.checkpoint, "load_model", lambda *a, **k: started.append("load_model"))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append("uvicorn.run"))
    code = main(["serve", "--model", str(ckpt), "--quantize", "int4-weight", "--device", "cpu",
                 "--log_file", "null", "--feedback_file", str(tmp_path / "f.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and started == []
    assert len(err) == 1 and err[0].startswith("error: ") and "'int4-weight' needs a CUDA GPU" in err[0], err


def test_an_already_quantized_folder_is_not_quantized_twice(tmp_path, capsys):
    from zoo.serve import create_app

    ckpt = gpt_classifier_checkpoint(tmp_path / "tiny.ckpt")
    assert main(["quantize", "--model", str(ckpt), "--scheme", "int8-dynamic", "--out", str(tmp_path / "q")]) == 0
    code = main(["serve", "--model", str(tmp_path / "q"), "--quantize", "int8-weight", "--log_file", "null"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is already quantized (int8-dynamic" in err[0], err
    running = Running(create_app(str(tmp_path / "q"), log_file=None, feedback_file=str(tmp_path / "f.jsonl")))
    try:
        assert httpx.get(running.url + "/health").json()["quantization"] == "int8-dynamic"  # the folder's scheme
    finally:
        running.stop()
