"""Serving beyond GPT: T5 answers completions with its decoder output and reads the Jinja chat template
of tokenizer_config.json; CLIP scores a base64 image against captions; a model that cannot do what
an endpoint asks gets a 400."""

import base64
import io
import json
from dataclasses import asdict

import pytest
import torch

import zoo
from tests.serve.conftest import Running

pytestmark = pytest.mark.xdist_group("serve")
httpx = pytest.importorskip("httpx2")
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"


@pytest.fixture(scope="module")
def t5_server(tmp_path_factory):
    from tests.models.test_seq2seq_generate import tiny_t5
    from tests.test_generation import word_tokenizer
    from zoo.serve import create_app

    path = tmp_path_factory.mktemp("t5-serve")
    tiny_t5().save_pretrained(path)
    word_tokenizer().save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    running = Running(create_app(str(path), model_name="t5", log_file=None,
                                 feedback_file=str(path / "feedback.jsonl")))
    yield running
    running.stop()


def test_t5_completion_is_its_decoder_output(t5_server):
    served = t5_server.state.served
    ids = torch.tensor([served.tokenizer.encode("w5 w9 w11 w30").ids])
    want = served.tokenizer.decode(served.model.generate(ids, max_new_tokens=8)[0, 1:].tolist())
    out = t5_server.client().completions.create(model="t5", prompt="w5 w9 w11 w30", max_tokens=8, temperature=0)
    assert out.choices[0].text == want and out.usage.prompt_tokens == 4


def test_chat_uses_the_checkpoint_template(t5_server):
    c = t5_server.client()
    messages = [{"role": "user", "content": "w5 w9"}]
    prompt = "[user] w5 w9 "
    assert t5_server.state.served.chat.render(messages) == prompt and not t5_server.state.served.chat.is_default
    chat = c.chat.completions.create(model="t5", messages=messages, max_tokens=6, temperature=0)
    plain = c.completions.create(model="t5", prompt=prompt, max_tokens=6, temperature=0)
    assert chat.choices[0].message.content == plain.choices[0].text


def test_t5_has_no_classifier_or_image_scores(t5_server):
    r = httpx.post(t5_server.url + "/v1/classifications", json={"model": "t5", "input": "w3"})
    assert r.status_code == 400 and "classify" in r.json()["error"]["message"]


def test_clip_scores_an_image_against_captions(tmp_path):
    from PIL import Image
    from tokenizers import Tokenizer, models
    from tokenizers.pre_tokenizers import WhitespaceSplit

    from zoo.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
    from zoo.serve import create_app

    config = CLIPConfig(vocab_size=8, projection_dim=8, vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=8,
                        n_layer=1, n_head=2), text=CLIPTextConfig(max_seq_len=8, d_model=8, n_layer=1, n_head=2,
                                                                  eos_token_id=1))
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "a": 2, "cat": 3, "dog": 4}, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    torch.manual_seed(0)
    model = CLIP(config).eval()
    ckpt = tmp_path / "clip.ckpt"
    torch.save({"zoo": {"family": "clip", "config": asdict(config), "tokenizer": tok.to_str()},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    png = io.BytesIO()
    Image.fromarray((torch.rand(8, 8, 3) * 255).byte().numpy()).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    running = Running(create_app(str(ckpt), model_name="clip", log_file=None, feedback_file=str(tmp_path / "f.jsonl")))
    try:
        captions = ["a cat </s>", "a dog </s>"]
        r = httpx.post(running.url + "/v1/image_scores", json={"model": "clip", "image": image, "captions": captions})
        assert r.status_code == 200, r.text
        probs = [d["probability"] for d in r.json()["data"]]
        from zoo.data.images import load_image

        served = running.state.served
        ids, mask = served.encode(captions)
        with torch.no_grad():
            pixels = load_image(io.BytesIO(png.getvalue()), 8)[None]
            logits = model.logit_scale.exp() * model.encode_image(pixels) @ model.encode_text(ids, mask).T
        assert torch.allclose(torch.tensor(probs), torch.softmax(logits, -1)[0], atol=1e-5)
        bad = httpx.post(running.url + "/v1/image_scores", json={"model": "clip", "image": "not-base64!", "captions": ["a"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "image"
        chat = httpx.post(running.url + "/v1/completions", json={"model": "clip", "prompt": "a"})
        assert chat.status_code == 400 and "generate" in chat.json()["error"]["message"]
        assert httpx.get(running.url + "/health").json()["family"] == "clip"
    finally:
        running.stop()
