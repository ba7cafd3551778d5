"""zoo quantize / zoo prune / zoo generate --quantize, end to end through the CLI."""

import pytest
import torch

from tests.compress.conftest import V, outputs, tiny
from zoo.cli import main
from zoo.compress.prune import save_checkpoint

pytest.importorskip("torchao")


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, V)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@pytest.fixture
def gpt_ckpt(tmp_path):
    path = tmp_path / "gpt.ckpt"
    save_checkpoint(tiny("gpt"), path, word_tokenizer())
    return path


def test_quantize_prune_generate(gpt_ckpt, tmp_path, capsys):
    from zoo.checkpoint import load_model

    assert main(["quantize", "--model", str(gpt_ckpt), "--scheme", "int8-weight", "--out", str(tmp_path / "q")]) == 0
    assert "12 linear layers quantized" in capsys.readouterr().out
    q, tok = load_model(str(tmp_path / "q"))  # the folder loads where any model loads (generate, serve)
    assert tok is not None and type(q.decoder.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    rel = (outputs(q) - outputs(tiny("gpt"))).norm() / outputs(tiny("gpt")).norm()
    assert rel < 0.03
    args = ["--prompt", "w5 w6", "--max_new_tokens", "4", "--temperature", "0"]
    assert main(["generate", "--model", str(tmp_path / "q"), *args]) == 0
    from_folder = capsys.readouterr().out
    assert main(["generate", "--model", str(gpt_ckpt), "--quantize", "int8-weight", *args]) == 0
    assert capsys.readouterr().out == from_folder
    assert main(["generate", "--model", str(gpt_ckpt), "--quantize", "float8", *args]) == 2  # CUDA only
    assert "needs a CUDA GPU" in capsys.readouterr().err

    assert main(["prune", "--model", str(gpt_ckpt), "--target", "0.7", "--out", str(tmp_path / "p.ckpt")]) == 0
    assert "structured:" in capsys.readouterr().out
    small, _ = load_model(str(tmp_path / "p.ckpt"))
    assert small.config.d_ff < 128
    assert main(["generate", "--model", str(tmp_path / "p.ckpt"), *args]) == 0


def test_served_and_evaluated_from_a_quantized_folder(gpt_ckpt, tmp_path):
    """zoo serve and zoo evaluate read models through zoo.checkpoint.load_model: a quantized folder serves."""
    from zoo.serve.model import ServedModel

    assert main(["quantize", "--model", str(gpt_ckpt), "--scheme", "int8-dynamic", "--out", str(tmp_path / "q")]) == 0
    served = ServedModel(str(tmp_path / "q"))
    assert served.generates and served.family == "gpt"
    assert type(served.model.decoder.layers[1].self_attn.o_proj.weight).__name__ == "Int8Tensor"
