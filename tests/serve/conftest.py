"""A served tiny model for the serving tests: uvicorn in a thread on 127.0.0.1 and a free port,
always stopped at the end."""

import socket
import threading
import time
from dataclasses import asdict

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("openai")

V = 48
LABELS = ["negative", "positive", "neutral"]


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, V)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="w1"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


def gpt_classifier_checkpoint(path):
    """A zoo GPT checkpoint with a 3-label classifier head, as SequenceClassification saves one."""
    from zoo.models import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=V, max_seq_len=512, d_model=32, n_layer=2, n_head=4, position="rope", init_std=0.3)
    model = GPT(cfg)
    head = torch.nn.Linear(32, len(LABELS))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({"classifier.1.weight": head.weight.detach(), "classifier.1.bias": head.bias.detach()})
    torch.save({"zoo": {"family": "gpt", "config": asdict(cfg), "tokenizer": word_tokenizer().to_str(),
                        "labels": LABELS, "num_labels": 3}, "state_dict": state}, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, app):
        import uvicorn

        self.app, self.port = app, free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = app.state.server

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0,
                             timeout=60, **kw)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if self.state.batcher is not None:
            self.state.batcher.close()


@pytest.fixture(scope="module")
def gpt_server(tmp_path_factory):
    from zoo.serve import create_app

    root = tmp_path_factory.mktemp("serve")
    ckpt = gpt_classifier_checkpoint(root / "tiny.ckpt")
    app = create_app(str(ckpt), model_name="tiny", log_file=str(root / "requests.jsonl"),
                     feedback_file=str(root / "feedback.jsonl"), max_batch_size=16, wait_ms=20)
    running = Running(app)
    running.root = root
    yield running
    running.stop()
