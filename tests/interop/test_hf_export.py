"""`zoo export --format hf` of every family, proven by transformers: AutoTokenizer encodes awkward
strings to the zoo tokenizer's ids, AutoModelFor... gives the zoo model's logits (fp32, eager, ≤ 1e-4),
fine-tuned classifiers load as ...ForSequenceClassification, shards and sharded checkpoints work, and a
configuration Hugging Face cannot express is refused in one line with exit status 2. Every family, and
the BERT and GPT classifiers, starts from a checkpoint a real `zoo fit` wrote (tests/interop/conftest.py)."""

import json

import pytest
import torch
from tokenizers import Tokenizer
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


def trained(ckpt):
    """The zoo model of a `zoo fit` checkpoint (fp32, eager attention, eval), its tokenizer and the checkpoint."""
    from zoo.checkpoint import read_checkpoint
    from zoo.families import FAMILIES

    c = read_checkpoint(ckpt)
    model = FAMILIES[c["zoo"]["family"]].build({**c["zoo"]["config"], "attn_impl": "eager"})
    model.load_state_dict({k[len("model."):]: v for k, v in c["state_dict"].items() if k.startswith("model.")})
    model = model.float().eval()
    tok = Tokenizer.from_str(c["zoo"]["tokenizer"])
    return model, tok, c


# a config of configs/ per family, trained for 2 steps by `zoo fit` (tests/interop/conftest.py); llama: GPT with
# RoPE, RMSNorm, SwiGLU, grouped KV heads and a sliding window, exported as Mistral
FITTED = {"gpt": ("gpt", "GPT2LMHeadModel"), "llama": ("gpt", "MistralForCausalLM"), "bert": ("bert", "BertForMaskedLM"),
          "t5": ("t5", "T5ForConditionalGeneration"), "bart": ("bart", "BartForConditionalGeneration"),
          "clip": ("clip", "CLIPModel")}


@pytest.mark.parametrize("name", list(FITTED))
def test_model_trained_with_zoo_fit_exports_and_loads_in_transformers(tmp_path, fitted, name):
    family, hf_class = FITTED[name]
    ckpt = fitted(name)
    model, tok, c = trained(ckpt)
    assert c["global_step"] == 2 and c["zoo"]["family"] == family
    rc, out = export(tmp_path, ckpt, "--format", "hf")  # `zoo export --model CKPT --out DIR --format hf`
    assert rc == 0
    hf = getattr(transformers, AUTO[family]).from_pretrained(out, attn_implementation="eager").eval()
    assert type(hf).__name__ == hf_class and hf.dtype == torch.float32
    ours, theirs = zoo_and_hf_outputs(family, model, hf, tok)
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4, f"max abs error {err}"
    check_tokenizer(tok, out)
    files = {f.name for f in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert ("generation_config.json" in files) == (family in ("gpt", "t5", "bart"))
    if family in ("gpt", "t5", "bart"):
        eos = {"gpt": "<|endoftext|>", "t5": "</s>", "bart": "</s>"}[family]
        assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.token_to_id(eos)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "bart", "clip"])
def test_large_weights_export_with_the_same_logits_and_tokens(tmp_path, family):
    """Built directly with large random weights (a few training steps leave them near their small
    initialisation): a wrong activation, epsilon or layout shows in the logits."""
    tok = tokenizer(family)
    model = build(family, tok)
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "last.ckpt", model, tok))
    assert rc == 0
    hf = getattr(transformers, AUTO[family]).from_pretrained(out, attn_implementation="eager").eval()
    ours, theirs = zoo_and_hf_outputs(family, model, hf, tok)
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4, f"max abs error {err}"
    check_tokenizer(tok, out)


def test_llama_style_gpt_exports_as_llama(tmp_path):
    tok = tokenizer("gpt")
    model = build("gpt", tok, position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False,
                  n_kv_head=2, tie_embeddings=False)
    rc, out = export(tmp_path, save_checkpoint(tmp_path / "last.ckpt", model, tok))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    assert rc == 0 and type(hf).__name__ == "LlamaForCausalLM"
    ours, theirs = zoo_and_hf_outputs("gpt", model, hf, tok)
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["bert-cls", "gpt-cls"])
def test_classifier_fine_tuned_with_zoo_fit_exports_as_sequence_classification(tmp_path, fitted, name):
    """configs/<family>/classify.yaml for 2 steps: the task's head (`classifier.1`) on the model's
    features is what ...ForSequenceClassification computes, with the run's topic names as labels."""
    ckpt = fitted(name)
    model, tok, c = trained(ckpt)
    head = nn.Linear(*reversed(c["state_dict"]["classifier.1.weight"].shape))
    head.load_state_dict({"weight": c["state_dict"]["classifier.1.weight"], "bias": c["state_dict"]["classifier.1.bias"]})
    labels = c["zoo"]["labels"]
    assert c["global_step"] == 2 and len(labels) == 6 == head.out_features  # num_topics of classify.yaml
    rc, out = export(tmp_path, ckpt, "--format", "hf")
    assert rc == 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager").eval()
    assert type(hf).__name__ == {"bert-cls": "BertForSequenceClassification",
                                 "gpt-cls": "GPT2ForSequenceClassification"}[name]
    assert hf.config.id2label == dict(enumerate(labels))
    ids, mask = padded(tok)
    with torch.no_grad():
        want = head(model.features(ids, mask))
        got = hf(input_ids=ids, attention_mask=mask).logits
    assert (want - got).abs().max().item() <= 1e-4
    check_tokenizer(tok, out)


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
