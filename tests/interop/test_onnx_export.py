"""`zoo export --format onnx`: GPT, BERT (masked LM, classifier) and CLIP graphs run in onnxruntime on
the CPU within 1e-4 of the zoo model at batch and sequence sizes other than the traced ones, and greedy
decoding through GPT's decoding-step graph gives `zoo generate`'s tokens."""

import numpy as np
import pytest
import torch

from tests.interop.helpers import build, save_checkpoint, tokenizer
from tests.interop.test_hf_export import classifier
from zoo.checkpoint import model_from_checkpoint
from zoo.cli import main

ort = pytest.importorskip("onnxruntime")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def text_batch(vocab, B=4, T=11):
    ids = torch.randint(3, vocab, (B, T), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


def close(got, want):
    err = np.abs(got - want.detach().numpy()).max()
    assert err <= 1e-4, f"max abs error {err}"


def export(tmp_path, ckpt, *extra):
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(ckpt), "--out", str(out), "--format", "onnx", *extra]) == 0
    return out


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_gpt_logits_and_decoding_step_graphs(tmp_path, style):
    tok = tokenizer("gpt")
    llama = dict(position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False, n_kv_head=2)
    model = build("gpt", tok, **(llama if style == "llama" else {}))
    out = export(tmp_path, save_checkpoint(tmp_path / "m.ckpt", model, tok), "--quantize", "true")
    ids, mask = text_batch(model.config.vocab_size)
    with torch.no_grad():
        want = model(ids, attention_mask=mask)
    got = session(out / "model.onnx").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    close(got[mask.bool().numpy()], want[mask.bool()])
    # prefill 8 tokens from an empty past, then 3 one-token steps: the last logits match the full pass
    step, L = session(out / "decoder_step.onnx"), model.config.n_layer
    kv, hd = model.config.n_kv_head or model.config.n_head, model.config.d_model // model.config.n_head
    past = {f"past_{k}_{i}": np.zeros((4, kv, 0, hd), np.float32) for i in range(L) for k in ("key", "value")}
    for start, end in ((0, 8), (8, 9), (9, 10), (10, 11)):
        res = step.run(None, {"input_ids": ids[:, start:end].numpy(), "attention_mask": np.ones((4, end), np.int64),
                              **past})
        past = {f"past_{k}_{i}": res[1 + 2 * i + j] for i in range(L) for j, k in enumerate(("key", "value"))}
    with torch.no_grad():
        close(res[0][:, -1], model(ids)[:, -1])
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    assert (out / "tokenizer.json").is_file()


def greedy(step_path, prompt, n_layer, kv, hd, steps, eos):
    step, ids = session(step_path), list(prompt)
    past = {f"past_{k}_{i}": np.zeros((1, kv, 0, hd), np.float32) for i in range(n_layer) for k in ("key", "value")}
    feed = prompt
    for _ in range(steps):
        res = step.run(None, {"input_ids": np.array([feed], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                              **past})
        past = {f"past_{k}_{i}": res[1 + 2 * i + j] for i in range(n_layer) for j, k in enumerate(("key", "value"))}
        nxt = int(res[0][0, -1].argmax())
        ids.append(nxt)
        feed = [nxt]
        if nxt == eos:
            break
    return ids


def test_greedy_through_the_decoding_step_graph_matches_zoo_generate(tmp_path, trained_checkpoint, capsys):
    model, tok = model_from_checkpoint(trained_checkpoint)
    out = export(tmp_path, trained_checkpoint)
    capsys.readouterr()
    prompt = "The "
    assert main(["generate", "--model", str(trained_checkpoint), "--prompt", prompt, "--temperature", "0",
                 "--max_new_tokens", "12"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    c = model.config
    ids = greedy(out / "decoder_step.onnx", tok.encode(prompt).ids, c.n_layer, c.n_kv_head or c.n_head,
                 c.d_model // c.n_head, 12, tok.token_to_id("<|endoftext|>"))
    assert len(ids) > len(tok.encode(prompt).ids) + 1
    assert tok.decode(ids) == printed


def test_bert_masked_lm_and_classifier_graphs(tmp_path):
    tok = tokenizer("bert")
    model = build("bert", tok)
    ids, mask = text_batch(model.config.vocab_size)
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    out = export(tmp_path, save_checkpoint(tmp_path / "m.ckpt", model, tok))
    with torch.no_grad():
        close(session(out / "model.onnx").run(None, feeds)[0], model(ids, mask, types))
    head = classifier(32)
    (tmp_path / "c").mkdir()
    out = export(tmp_path / "c", save_checkpoint(tmp_path / "c.ckpt", model, tok, head, ["x", "y", "z"]))
    with torch.no_grad():
        close(session(out / "classifier.onnx").run(None, feeds)[0], head(model.features(ids, mask, types)))


def test_clip_tower_graphs(tmp_path):
    tok = tokenizer("clip")
    model = build("clip", tok)
    out = export(tmp_path, save_checkpoint(tmp_path / "m.ckpt", model, tok))
    ids, mask = text_batch(model.config.vocab_size, B=5, T=9)
    ids[:, 4] = model.config.text.eos_token_id
    pixels = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        close(session(out / "text.onnx").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0],
              model.encode_text(ids, mask))
        close(session(out / "image.onnx").run(None, {"pixel_values": pixels.numpy()})[0], model.encode_image(pixels))


def test_families_without_an_onnx_graph_are_refused_in_one_line(tmp_path, capsys):
    tok = tokenizer("t5")
    rc = main(["export", "--model", str(save_checkpoint(tmp_path / "t5.ckpt", build("t5", tok), tok)),
               "--out", str(tmp_path / "o"), "--format", "onnx"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--format hf" in err
