"""`zoo export --format hf` of every family, proven by transformers: AutoTokenizer encodes awkward
strings to the zoo tokenizer's ids, AutoModelFor... gives the zoo model's logits (fp32, eager, ≤ 1e-4),
fine-tuned classifiers load as ...ForSequenceClassification, shards and sharded checkpoints work, and a
configuration Hugging Face cannot express is refused in one line with exit status 2."""

import json

import pytest
import torch
from torch import nn

import zoo
from tests.interop.helpers import AWKWARD, build, save_checkpoint, tokenizer
from zoo.cli import main
from zoo.hf import read_state_dict

transformers = pytest.importorskip("transformers")
AUTO = {"gpt": "AutoModelForCausalLM", "bert": "AutoModelForMaskedLM", "t5": "AutoModelForSeq2SeqLM",
        "bart": "AutoModelForSeq2SeqLM", "clip": "AutoModel"}
TEXTS = ["The quick brown fox jumps", "naïve café 🙂  x"]


def export(tmp_path, ckpt, *extra) -> tuple[int, str]:
    out = tmp_path / "out"
    return main(["export", "--model", str(ckpt), "--out", str(out), *extra]), out


def padded(tok, texts=TEXTS):
    """Right-padded ids and mask of `texts`, encoded by the zoo tokenizer."""
    rows = [tok.encode(t).ids for t in texts]
    T = max(map(len, rows))
    pad = tok.token_to_id("<pad>") if tok.token_to_id("<pad>") is not None else tok.token_to_id("[PAD]")
    ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    return ids, mask


def zoo_and_hf_outputs(family, model, hf, tok):
    ids, mask = padded(tok, [t + "<|endoftext|>" for t in TEXTS] if family == "clip" else TEXTS)  # CLIP pools there
    with torch.no_grad():
        if family == "clip":
            pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
            return model(pixels, ids, mask).logits_per_image, hf(input_ids=ids, attention_mask=mask,
                                                                 pixel_values=pixels).logits_per_image
        if family in ("t5", "bart"):
            dec = ids[:, :4]
            return (model(ids, attention_mask=mask, decoder_input_ids=dec),
                    hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)
        valid = mask.bool()
        return model(ids, attention_mask=mask)[valid], hf(input_ids=ids, attention_mask=mask).logits[valid]


def check_tokenizer(tok, out):
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    for text in AWKWARD:
        assert hf_tok(text)["input_ids"] == tok.encode(text).ids, text


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "bart", "clip"])
def test_export_loads_in_transformers_with_the_same_logits_and_tokens(tmp_path, family):
    tok = tokenizer(family)
    model = build(family, tok)
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "last.ckpt", model, tok))
    assert rc == 0
    hf = getattr(transformers, AUTO[family]).from_pretrained(out, attn_implementation="eager").eval()
    ours, theirs = zoo_and_hf_outputs(family, model, hf, tok)
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4, f"max abs error {err}"
    check_tokenizer(tok, out)
    files = {f.name for f in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert ("generation_config.json" in files) == (family in ("gpt", "t5", "bart"))


def test_llama_style_gpt_exports_as_llama(tmp_path):
    tok = tokenizer("gpt")
    model = build("gpt", tok, position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False,
                  n_kv_head=2, tie_embeddings=False)
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "last.ckpt", model, tok))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    assert rc == 0 and type(hf).__name__ == "LlamaForCausalLM"
    ours, theirs = zoo_and_hf_outputs("gpt", model, hf, tok)
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_gpt_trained_with_zoo_fit_exports(tmp_path, trained_checkpoint):
    from zoo.checkpoint import model_from_checkpoint

    model, tok = model_from_checkpoint(trained_checkpoint)
    rc, out = export(tmp_path, trained_checkpoint)
    assert rc == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    ours, theirs = zoo_and_hf_outputs("gpt", model, hf, tok)
    assert (ours - theirs).abs().max().item() <= 1e-4
    check_tokenizer(tok, out)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.token_to_id("<|endoftext|>")


def classifier(width, n=3, seed=0):
    head = nn.Linear(width, n)
    with torch.no_grad():
        head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        head.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    return head


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_fine_tuned_classifier_exports_as_sequence_classification(tmp_path, family):
    tok = tokenizer(family)
    model = build(family, tok)
    head, labels = classifier(32), ["negative", "neutral", "positive"]
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "cls.ckpt", model, tok, head, labels))
    assert rc == 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager").eval()
    assert type(hf).__name__ == {"gpt": "GPT2ForSequenceClassification", "bert": "BertForSequenceClassification"}[family]
    assert hf.config.id2label == dict(enumerate(labels))
    ids, mask = padded(tok)
    with torch.no_grad():
        want = head(model.features(ids, mask))
        got = hf(input_ids=ids, attention_mask=mask).logits
    assert (want - got).abs().max().item() <= 1e-4


def test_llama_classifier_with_a_bias_is_refused(tmp_path, capsys):
    tok = tokenizer("gpt")
    model = build("gpt", tok, position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False)
    rc, _ = export(tmp_path, save_checkpoint(tmp_path / "cls.ckpt", model, tok, classifier(32), ["a", "b", "c"]))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "RMSNorm" in err


@pytest.mark.parametrize("overrides,setting", [
    (dict(position="alibi"), "position='alibi'"),
    (dict(position="sinusoidal"), "position='sinusoidal'"),
    (dict(gated_mlp=True), "gated_mlp=True"),
    (dict(position="rope", norm="layernorm", gated_mlp=True, activation="silu", bias=False), "norm='layernorm'"),
])
def test_configuration_hf_cannot_express_is_refused_in_one_line(tmp_path, capsys, overrides, setting):
    tok = tokenizer("gpt")
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "x.ckpt", build("gpt", tok, **overrides), tok))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and setting in err, err
    assert not (out / "model.safetensors").exists()


def test_shards_above_the_size_limit_and_dtype(tmp_path):
    tok = tokenizer("bert")
    model = build("bert", tok)
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "last.ckpt", model, tok), "--max_shard_size", "20000")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert rc == 0 and len(set(index["weight_map"].values())) > 2 and not (out / "model.safetensors").exists()
    hf = transformers.AutoModelForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
    ours, theirs = zoo_and_hf_outputs("bert", model, hf, tok)
    assert (ours - theirs).abs().max().item() <= 1e-4
    zoo.to_hf(model, tmp_path / "bf16", dtype="bfloat16", tokenizer=tok)
    state = read_state_dict(tmp_path / "bf16")
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_sharded_checkpoint_folder_exports(tmp_path):
    """A torch.distributed.checkpoint folder in Lightning's layout (`.metadata`, `*.distcp`, `meta.pt`),
    written here in one process rather than by an FSDP2 run (tests/tasks/test_clip_sharded.py does that, slowly)."""
    import torch.distributed.checkpoint as dcp

    tok = tokenizer("clip")
    model = build("clip", tok)
    ckpt = torch.load(save_checkpoint(tmp_path / "full.ckpt", model, tok), weights_only=True)
    folder = tmp_path / "sharded.ckpt"
    dcp.save({"state_dict": ckpt.pop("state_dict")}, checkpoint_id=str(folder))
    torch.save(ckpt, folder / "meta.pt")
    rc, out = export(tmp_path, folder)
    assert rc == 0
    hf = transformers.AutoModel.from_pretrained(out, attn_implementation="eager").eval()
    ours, theirs = zoo_and_hf_outputs("clip", model, hf, tok)
    assert (ours - theirs).abs().max().item() <= 1e-4
