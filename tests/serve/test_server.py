"""zoo serve driven by the official `openai` client: completions, chat, streaming, embeddings,
classification; bad requests get OpenAI-shaped 4xx errors and the server keeps serving; auth; 16
concurrent seeded requests equal the same requests one by one; a disconnect mid-stream; request log,
metrics and feedback."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx  # the HTTP client the openai package ships with
import openai
import pytest
import torch

from tests.serve.conftest import LABELS

pytestmark = pytest.mark.xdist_group("serve")  # one server per module, on one worker

PROMPTS = [" ".join(f"w{(7 * i + j) % 46 + 2}" for j in range(1 + i % 5)) for i in range(16)]


def test_models_completions_chat_embeddings(gpt_server):
    c = gpt_server.client()
    assert [m.id for m in c.models.list().data] == ["tiny"]
    out = c.completions.create(model="tiny", prompt="w5 w6 w7", max_tokens=6, temperature=0)
    served = gpt_server.state.served
    ids = served.tokenizer.encode("w5 w6 w7").ids
    from zoo.generation import generate

    ref = generate(served.model, torch.tensor([ids]), max_new_tokens=6, temperature=0, eos_token_id=0)[0, 3:].tolist()
    ref = ref[: ref.index(0) + 1] if 0 in ref else ref
    assert out.choices[0].text == served.tokenizer.decode(ref)
    assert out.usage.prompt_tokens == 3 and out.usage.completion_tokens == len(ref)
    chat = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "w9 w10"}], max_tokens=5,
                                     temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 5
    emb = c.embeddings.create(model="tiny", input=["w3 w4", "w5"])  # the client asks for base64 by default
    with torch.no_grad():
        ids, mask = served.encode(["w3 w4", "w5"])
        want = served.model.features(ids, mask)
    got = torch.tensor([d.embedding for d in emb.data])
    assert got.shape == (2, 32) and torch.allclose(got, want, atol=1e-5)


def test_streaming_equals_one_response(gpt_server):
    c = gpt_server.client()
    kw = dict(model="tiny", prompt="w11 w12", max_tokens=12, temperature=1.2, seed=5)
    whole = c.completions.create(**kw).choices[0].text
    chunks = list(c.completions.create(stream=True, **kw))
    assert "".join(ch.choices[0].text for ch in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    pieces = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "w3"}], max_tokens=4,
                                            stream=True, stream_options={"include_usage": True}))
    assert pieces[-1].usage is not None and pieces[-1].usage.completion_tokens <= 4


def test_concurrent_seeded_requests_equal_one_by_one(gpt_server):
    c = gpt_server.client()

    def ask(i):
        return c.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=4 + i % 7, temperature=1.0,
                                    top_p=0.9, seed=i).choices[0].text

    alone = [ask(i) for i in range(16)]
    before = gpt_server.state.metrics.batch_size.collect()[0]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, range(16)))
    assert together == alone
    sums = {s.name: s.value for s in gpt_server.state.metrics.batch_size.collect()[0].samples}
    old = {s.name: s.value for s in before.samples}
    batches = sums["zoo_batch_size_count"] - old["zoo_batch_size_count"]
    assert batches < 16  # some requests were decoded together


def error_of(response):
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("body, status, param", [
    (b'{"model": "tiny", "prompt": ', 400, None),  # malformed JSON
    ({"model": "tiny"}, 400, "prompt"),  # missing field
    ({"model": "tiny", "prompt": "w3", "max_tokens": "5"}, 400, "max_tokens"),  # mistyped
    ({"model": "tiny", "prompt": "w3", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "w3", "max_tokens": 600}, 400, "max_tokens"),  # beyond the context (512)
    ({"model": "tiny", "prompt": "w3", "temperature": -1}, 400, "temperature"),
    ({"model": "other", "prompt": "w3"}, 404, "model"),
    ({"model": "tiny", "prompt": "w3 " * 400_000}, 413, None),  # over-long body
])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(gpt_server, body, status, param):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(gpt_server.url + "/v1/completions", content=data, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param and err["message"]
    ok = gpt_server.client().completions.create(model="tiny", prompt="w3", max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_the_openai_client_sees_the_errors(gpt_server):
    c = gpt_server.client()
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "w3"}], temperature=-0.5)
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-4", prompt="w3")


def test_api_key(gpt_server):
    gpt_server.state.api_key = "s3cret"
    try:
        with pytest.raises(openai.AuthenticationError):
            gpt_server.client(api_key="wrong").models.list()
        assert httpx.get(gpt_server.url + "/v1/models").status_code == 401
        assert httpx.get(gpt_server.url + "/health").status_code == 200
        assert gpt_server.client(api_key="s3cret").models.list().data[0].id == "tiny"
    finally:
        gpt_server.state.api_key = None


def test_disconnect_mid_stream_frees_the_row(gpt_server):
    body = {"model": "tiny", "prompt": "w20 w21", "max_tokens": 500, "temperature": 1.0, "seed": 1}
    full = gpt_server.client().completions.create(**body).usage.completion_tokens
    assert full > 60  # this seed runs long enough to be cut
    with httpx.stream("POST", gpt_server.url + "/v1/completions", json={**body, "stream": True}, timeout=30) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines)[len("data: "):])
    log = gpt_server.root / "requests.jsonl"
    deadline = time.time() + 20
    while not (mine := [json.loads(x) for x in log.read_text().splitlines() if first["id"] in x]):
        assert time.time() < deadline, "the disconnect was never logged"
        time.sleep(0.05)
    assert mine[0]["status"] == 499 and mine[0]["completion_tokens"] < full  # it stopped decoding
    ok = gpt_server.client().completions.create(model="tiny", prompt="w3", max_tokens=3)
    assert ok.usage.completion_tokens >= 1


def test_request_log_metrics_and_feedback(gpt_server):
    c = gpt_server.client()
    assert httpx.post(gpt_server.url + "/v1/completions", json={"model": "other", "prompt": "w3"}).status_code == 404
    out = c.completions.create(model="tiny", prompt="w30 w31", max_tokens=3, temperature=0)
    records = [json.loads(line) for line in (gpt_server.root / "requests.jsonl").read_text().splitlines()]
    mine = next(r for r in records if r["id"] == out.id)
    assert mine["endpoint"] == "/v1/completions" and mine["status"] == 200 and mine["prompt_tokens"] == 2
    assert mine["completion_tokens"] == out.usage.completion_tokens and mine["error"] is None
    assert "prompt" not in mine and "completion" not in mine  # texts only with --log_content
    assert any(r["status"] == 404 and "does not exist" in r["error"] for r in records)  # errors are logged
    metrics = httpx.get(gpt_server.url + "/metrics").text
    assert 'zoo_requests_total{endpoint="/v1/completions",status="200"}' in metrics
    assert "zoo_batch_size_bucket" in metrics and "zoo_queue_length" in metrics and "zoo_generated_tokens_total" in metrics
    r = httpx.post(gpt_server.url + "/v1/feedback", json={"id": out.id, "rating": 1, "correction": "w1 w2"})
    assert r.status_code == 200
    line = json.loads((gpt_server.root / "feedback.jsonl").read_text().splitlines()[-1])
    assert line["prompt"] == "w30 w31" and line["response"] == "w1 w2" and line["rating"] == 1
    assert httpx.post(gpt_server.url + "/v1/feedback", json={"id": "nope"}).status_code == 404


def test_classification(gpt_server):
    r = httpx.post(gpt_server.url + "/v1/classifications", json={"model": "tiny", "input": ["w3 w4", "w9"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    served = gpt_server.state.served
    with torch.no_grad():
        ids, mask = served.encode(["w3 w4", "w9"])
        want = torch.softmax(served.classifier.head(served.model.features(ids, mask)), -1)
    for row, probs in zip(data, want):
        assert list(row["probabilities"]) == LABELS
        assert torch.allclose(torch.tensor(list(row["probabilities"].values())), probs, atol=1e-5)
        assert row["label"] == LABELS[int(probs.argmax())]
