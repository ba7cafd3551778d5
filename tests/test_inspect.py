"""`zoo inspect` walks a forward pass of every family: its printed top-k predictions equal the model's
own forward pass, its attention tables are softmax-consistent and match scores computed here by
hand (scale·QKᵀ + mask), its Q/K/V shapes follow the config, heatmaps are written, and input
mistakes end in one `error:` line."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re

import pytest
import torch

from zoo.blocks import ScaledDotProduct
from zoo.cli import main
from zoo.data.tokenizer import train_tokenizer
from zoo.inspection import Recording
from zoo.models import CLIP, GPT, Bart, BartConfig, Bert, BertConfig, CLIPConfig, GPTConfig, T5, T5Config
from zoo.models.clip import CLIPTextConfig, CLIPVisionConfig

CORPUS = ["The cat sat on the mat.", "The dog ran in the park.", "A bird sang a song.",
          "The capital of France is Paris.", "Cats and dogs are friends.", "a photo of the digit seven",
          "a handwritten three", "the number one written by hand"] * 4
# `make test` runs `-n 2 --dist loadgroup`: one worker builds the module's checkpoints, once.
pytestmark = pytest.mark.xdist_group("inspect")
ROW = re.compile(r"#(\d+)\s+(?:id|caption)=(\d+)\s+(.*?)\s+p=([0-9.]+)\s+logit=(\S+)$")


def tokenizer(kind, specials=None):
    return train_tokenizer(CORPUS, kind, {"bpe": 300, "wordpiece": 150, "unigram": 160}[kind], specials)


def build(family):
    """(model, tokenizer) of a tiny, seeded random model of `family`; the weights are redrawn larger so
    that predictions and attention patterns are far from uniform."""
    torch.manual_seed(0)
    if family == "gpt":
        tok = tokenizer("bpe")
        model = GPT(GPTConfig(vocab_size=tok.get_vocab_size(), max_seq_len=16, d_model=32, n_layer=2, n_head=4,
                              n_kv_head=2, position="alibi"))
    elif family == "bert":
        tok = tokenizer("wordpiece")
        model = Bert(BertConfig(vocab_size=tok.get_vocab_size(), max_seq_len=24, d_model=32, n_layer=2, n_head=2,
                                dropout=0.0, attn_dropout=0.0))
    elif family == "t5":
        tok = tokenizer("unigram")
        model = T5(T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, n_layer=2,
                            n_decoder_layer=3, n_head=4, relative_num_buckets=8, relative_max_distance=16,
                            dropout=0.0, attn_dropout=0.0))
    elif family == "bart":
        tok = tokenizer("bpe", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        model = Bart(BartConfig(vocab_size=tok.get_vocab_size(), max_seq_len=16, d_model=32, n_layer=2, n_head=2,
                                d_ff=64, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0))
    else:
        tok = tokenizer("bpe")
        model = CLIP(CLIPConfig(vocab_size=tok.get_vocab_size(), projection_dim=16,
                                vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=32, n_layer=2, n_head=2),
                                text=CLIPTextConfig(max_seq_len=16, d_model=32, n_layer=2, n_head=2, eos_token_id=0)))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model.eval(), tok


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family → (path of a .ckpt as `zoo fit` writes it, model, tokenizer)."""
    root = tmp_path_factory.mktemp("inspect")
    out = {}
    for family in ("gpt", "bert", "t5", "bart", "clip"):
        model, tok = build(family)
        path = root / f"{family}.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                    "zoo": {"family": family, "config": dataclasses.asdict(model.config), "tokenizer": tok.to_str()}},
                   path)
        out[family] = (path, model, tok)
    return out


TEXTS = {"gpt": "The cat sat on", "bert": "The [MASK] sat on the [MASK].", "t5": "The cat sat.",
         "bart": "The cat <mask> on.", "clip": "a handwritten three | a photo of the digit seven | the number one"}
EXTRA = {"t5": ["--decoder_text", "on the"], "bart": ["--decoder_text", "on the"], "clip": ["--image", "digits:3"]}
LAYER_HEAD = {"gpt": (1, 1), "bert": (1, 1), "t5": (1, 3), "bart": (0, 1), "clip": (1, 0)}


def run_inspect(argv) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["inspect", *argv])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def runs(checkpoints, tmp_path_factory):
    """family → (stdout of `zoo inspect`, its out_dir), one run per family."""
    out = {}
    for family, (path, _, _) in checkpoints.items():
        layer, head = LAYER_HEAD[family]
        out_dir = tmp_path_factory.mktemp(f"heatmaps-{family}")
        code, text = run_inspect(["--model", str(path), "--text", TEXTS[family], "--layer", str(layer),
                                  "--head", str(head), "--top_k", "4", "--out_dir", str(out_dir),
                                  *EXTRA.get(family, [])])
        assert code == 0, text
        out[family] = (text, out_dir)
    return out


def printed_predictions(out: str) -> list[list[tuple[int, float]]]:
    """(id, probability) rows of each printed top-k section, in order."""
    sections, lines = [], out.split("== prediction", 1)[1].splitlines()
    for line in lines:
        if line.strip().startswith("top-"):
            sections.append([])
        elif m := ROW.search(line):
            sections[-1].append((int(m.group(2)), float(m.group(4))))
    return sections


def expected_probs(family, model, tok) -> list[torch.Tensor]:
    """The model's own forward pass (its default attention backend), built here from the text."""
    with torch.no_grad():
        if family == "clip":
            from zoo.data.images import digits

            pixels = digits(model.config.vision.image_size)[0][3:4]
            captions = [c.strip() for c in TEXTS["clip"].split("|")]
            text = torch.cat([model.encode_text(torch.tensor([tok.encode(c).ids + [0]])) for c in captions])
            logits = model.logit_scale.exp() * model.encode_image(pixels) @ text.t()
            return [logits[0].softmax(-1)]
        ids = torch.tensor([tok.encode(TEXTS[family]).ids])
        if family == "gpt":
            return [model(ids)[0, -1].softmax(-1)]
        if family == "bert":
            logits = model(ids)[0]
            return [logits[p].softmax(-1) for p in (ids[0] == tok.token_to_id("[MASK]")).nonzero()[:, 0]]
        follow = tok.encode("on the", add_special_tokens=False).ids  # the --decoder_text of both
        dec = torch.tensor([[model.config.decoder_start_token_id, *follow]])
        return [model(input_ids=ids, decoder_input_ids=dec)[0, -1].softmax(-1)]


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "bart", "clip"])
def test_printed_top_k_is_the_forward_pass(family, runs, checkpoints):
    _, model, tok = checkpoints[family]
    sections = printed_predictions(runs[family][0])
    expected = expected_probs(family, model, tok)
    assert len(sections) == len(expected) == (2 if family == "bert" else 1)
    for rows, probs in zip(sections, expected):
        assert_top_k(rows, probs, 4)


def assert_top_k(rows: list[tuple[int, float]], probs: torch.Tensor, k: int) -> None:
    """The printed rows are the k most probable ids, in order, with the model's probabilities."""
    ids, printed = torch.tensor([i for i, _ in rows]), torch.tensor([p for _, p in rows])
    assert len(rows) == min(k, probs.numel()) and len(set(ids.tolist())) == len(rows)
    assert torch.allclose(probs[ids], printed, atol=1e-5)
    rest = probs.clone()
    rest[ids] = -1.0
    assert bool((printed[:-1] >= printed[1:]).all()) and float(probs[ids].min()) >= float(rest.max()) - 1e-7
    top = probs.topk(len(rows))
    if bool(((top.values[:-1] - top.values[1:]) > 1e-6).all()):  # no near-ties: one right order
        assert ids.tolist() == top.indices.tolist()


def printed_tables(out: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """attention name → (scores, weights) of the chosen head, as printed."""
    tables, lines = {}, out.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("== ") and ", head " in line:
            key, block = line[3:].split(",")[0], []
            for row in lines[n + 1:]:
                if row.startswith("  heatmap"):
                    break
                block.append(row)
            cut = next(i for i, row in enumerate(block) if row.startswith("  weights"))
            tables[key] = (matrix(block[2:cut]), matrix(block[cut + 2:]))
    return tables


def matrix(rows: list[str]) -> torch.Tensor:
    def trailing_floats(row):
        vals = []
        for cell in reversed(row.split()):
            try:
                vals.append(float(cell))
            except ValueError:
                break
        return vals[::-1]

    cells = [trailing_floats(r) for r in rows]
    width = min(map(len, cells))  # a label that reads as a number adds one cell to its row
    return torch.tensor([c[-width:] for c in cells])


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "bart", "clip"])
def test_attention_tables_and_heatmaps(family, runs):
    out, out_dir = runs[family]
    layer, head = LAYER_HEAD[family]
    tables = printed_tables(out)
    seq2seq = [("encoder", "self"), ("decoder", "self"), ("decoder", "cross")]
    kinds = {"gpt": [("decoder", "self")], "bert": [("encoder", "self")], "t5": seq2seq, "bart": seq2seq,
             "clip": [("vision_model.encoder", "self"), ("text_model.transformer", "self")]}
    names = [f"{stack}.layers.{layer}.{kind}_attn" for stack, kind in kinds[family]]
    assert sorted(tables) == sorted(names)
    for name, (scores, weights) in tables.items():
        assert scores.shape == weights.shape and scores.numel() >= 1
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-3)
        assert torch.allclose(scores.softmax(-1), weights, atol=2e-3), name
        png = out_dir / f"{name.replace('.', '-')}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if family in ("gpt", "t5", "bart"):  # causal self-attention in the decoder: nothing above the diagonal
        scores = tables[f"decoder.layers.{layer}.self_attn"][0]
        assert scores.shape[0] >= 2  # a decoder input of several tokens, or the check below is vacuous
        assert torch.isinf(scores.triu(1)[scores.triu(1) != 0]).all() and scores.shape[0] == scores.shape[1]


def qkv_shapes(out: str) -> dict[str, list[tuple[int, ...]]]:
    shapes = {"Q": [], "K": [], "V": []}
    for m in re.finditer(r"^\s+([QKV]) = .*?\((\d+(?:, \d+)+)\)", out, re.M):
        shapes[m.group(1)].append(tuple(int(x) for x in m.group(2).split(", ")))
    return shapes


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_qkv_shapes_follow_the_config(family, runs, checkpoints):
    _, model, tok = checkpoints[family]
    c = model.config
    shapes = qkv_shapes(runs[family][0])
    if family == "gpt":  # grouped-query: 4 query heads, 2 key/value heads of 32 / 4 = 8
        T = len(tok.encode(TEXTS["gpt"]).ids)
        assert shapes == {"Q": [(1, 4, T, 8)] * c.n_layer, "K": [(1, 2, T, 8)] * c.n_layer,
                          "V": [(1, 2, T, 8)] * c.n_layer}
    else:  # d_kv = 8 per head; the decoder's cross-attention keys come from the encoder's S positions
        S, T = len(tok.encode(TEXTS["t5"]).ids), 1 + len(tok.encode("on the", add_special_tokens=False).ids)
        enc, dec = [(1, 4, S, 8)] * c.n_layer, [(1, 4, T, 8)] * c.n_decoder_layer
        assert shapes["Q"] == enc + [q for _ in dec for q in ((1, 4, T, 8), (1, 4, T, 8))]
        assert shapes["K"] == enc + [k for _ in dec for k in ((1, 4, T, 8), (1, 4, S, 8))]
        assert shapes["V"] == shapes["K"]


def test_scores_are_the_textbook_formula(runs, checkpoints):
    """GPT layer 1, head 1 recomputed here: (x W_qᵀ)(x W_kᵀ)ᵀ/√d − slope·|i−j|, causal; GQA: kv head 0."""
    _, model, tok = checkpoints["gpt"]
    ids = torch.tensor([tok.encode(TEXTS["gpt"]).ids])
    seen = {}
    block = model.decoder.layers[1]
    handle = block.self_attn_norm.register_forward_hook(lambda m, a, out: seen.setdefault("x", out))
    with torch.no_grad():
        model(ids)
    handle.remove()
    x, a = seen["x"][0], block.self_attn  # (T, 32)
    q = (x @ a.q_proj.weight.t() + a.q_proj.bias)[:, 8:16]  # query head 1
    k = (x @ a.k_proj.weight.t() + a.k_proj.bias)[:, 0:8]  # key head 0 serves query heads 0 and 1
    T = x.shape[0]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    slope = 2.0 ** (-8.0 * 2 / 4)  # ALiBi, head 1 of 4: 2^(-8·2/4)
    expected = (q @ k.t() / 8**0.5 - slope * (i - j).abs()).masked_fill(j > i, float("-inf"))
    printed = printed_tables(runs["gpt"][0])["decoder.layers.1.self_attn"][0]
    assert torch.equal(torch.isinf(printed), torch.isinf(expected))
    finite = ~torch.isinf(expected)
    assert torch.allclose(printed[finite], expected[finite], atol=1e-3)


def test_recording_leaves_the_model_as_it_was(checkpoints):
    _, model, tok = checkpoints["t5"]
    ids = torch.tensor([tok.encode(TEXTS["t5"]).ids])
    dec = torch.tensor([[0, 5, 6]])
    with torch.no_grad():
        before = model(input_ids=ids, decoder_input_ids=dec)
        rec = Recording(model)
        with rec.active():
            during = model(input_ids=ids, decoder_input_ids=dec)
        after = model(input_ids=ids, decoder_input_ids=dec)
    assert torch.allclose(during, before, atol=1e-5) and torch.equal(after, before)
    assert all(m.impl == "torch" for m in model.modules() if isinstance(m, ScaledDotProduct))  # backend restored
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    assert len(rec.attention) == 2 + 2 * 3  # encoder self ×2, decoder self and cross ×3


@pytest.mark.parametrize("family,argv,words", [
    ("gpt", ["--layer", "2"], ["--layer 2", "decoder has 2 layers"]),
    ("clip", ["--head", "2", "--image", "digits:0"], ["--head 2", "2 heads"]),
    ("gpt", ["--text", "   "], ["--text is empty"]),
    ("bart", ["--text", "The cat sat on the mat and the dog ran in the park."], ["tokens", "context holds 16"]),
    ("bert", ["--text", "The capital of France is Paris."], ["no [MASK]", "The capital of France is [MASK]."]),
    ("clip", [], ["--image"]),
    ("t5", ["--stack", "vision"], ["--stack vision", "encoder, decoder"]),
])
def test_input_mistakes_are_one_line(family, argv, words, checkpoints, tmp_path, capsys):
    args = ["--model", str(checkpoints[family][0]), "--text", TEXTS[family], "--out_dir", str(tmp_path), *argv]
    assert main(["inspect", *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["inspect", "--model", str(tmp_path / "nope.ckpt"), "--text", "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--layer", "--head", "--top_k", "--decoder_text", "--image", "--max_values"))


def test_hugging_face_directory(checkpoints, tmp_path):
    """A Hugging Face GPT-2 directory: the printed top-k equals transformers' own forward pass."""
    transformers = pytest.importorskip("transformers")
    tok = checkpoints["gpt"][2]
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=16, n_embd=32, n_layer=2, n_head=2)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    hf.save_pretrained(tmp_path / "hf")
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    code, out = run_inspect(["--model", str(tmp_path / "hf"), "--text", TEXTS["gpt"], "--out_dir", str(tmp_path)])
    assert code == 0, out
    with torch.no_grad():
        probs = hf(torch.tensor([tok.encode(TEXTS["gpt"]).ids])).logits[0, -1].softmax(-1)
    assert_top_k(printed_predictions(out)[0], probs, 5)


def test_without_matplotlib_the_trace_is_printed_and_heatmaps_skipped(checkpoints, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `from matplotlib.figure import ...` fails
    path = checkpoints["gpt"][0]
    code, text = run_inspect(["--model", str(path), "--text", TEXTS["gpt"], "--out_dir", str(tmp_path)])
    assert code == 0
    assert "no heatmap: it needs matplotlib" in text and "heatmap of all" not in text
    assert printed_predictions(text) and not list(tmp_path.glob("*.png"))
