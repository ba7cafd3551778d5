"""How `zoo inspect` prints a recorded pass: tokens, embeddings, each layer's vectors, the attention
of one layer and head as tables and heatmaps, and the top-k predictions; and `inspect_model`, the
command itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from zoo.blocks import Attention, LearnedPositions, PatchEmbedding, SinusoidalPositions, TransformerStack
from zoo.errors import ZooError
from zoo.families import resolve
from zoo.inspection.record import Pass, Recording
from zoo.models.base import ImageTextModel

MAX_TABLE = 12  # rows/columns of a printed attention matrix before the middle is elided
MAX_ROWS = 6  # token rows printed per embedding


def _vec(t: torch.Tensor, n: int) -> str:
    flat = t.flatten()
    more = ", …" if flat.numel() > n else ""
    return "[" + ", ".join(f"{float(v):+.4f}" for v in flat[:n]) + more + "]"


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def _line(label: str, t: torch.Tensor, values: torch.Tensor, n: int) -> str:
    return f"    {label:<38} {_shape(t):<18} {_vec(values, n)}"


def _kept(n: int) -> list[Optional[int]]:
    """Indices to print of n rows/columns: all, or the first and last few around a None (…)."""
    if n <= MAX_TABLE:
        return list(range(n))
    half = MAX_TABLE // 2
    return list(range(half)) + [None] + list(range(n - half + 1, n))


def _matrix(m: torch.Tensor, rows: list[str], cols: list[str]) -> list[str]:
    """A (Sq, Sk) matrix as a text table, queries down, keys across."""
    cut = lambda s: (s if len(s) <= 9 else s[:8] + "…")  # noqa: E731
    ri, ci = _kept(m.shape[0]), _kept(m.shape[1])
    head = " " * 14 + "".join(f"{'…' if j is None else cut(cols[j]):>10}" for j in ci)
    lines = [head]
    for i in ri:
        if i is None:
            lines.append(f"    {'…':<10}")
            continue
        cells = "".join(f"{'…':>10}" if j is None else f"{float(m[i, j]):>10.4f}" for j in ci)
        lines.append(f"    {cut(rows[i]):<10}{cells}")
    return lines


def _heatmap(weights: torch.Tensor, rows: list[str], cols: list[str], title: str, path: Path) -> None:
    """All heads' (H, Sq, Sk) weights side by side; matplotlib's Figure API leaves pyplot untouched."""
    from matplotlib.figure import Figure

    H = weights.shape[0]
    ncols = min(H, 4)
    nrows = -(-H // ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        im = ax.imshow(weights[h].float().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
        if len(cols) <= 24:
            ax.set_xticks(range(len(cols)), cols, fontsize=6, rotation=90)
        if len(rows) <= 24:
            ax.set_yticks(range(len(rows)), rows, fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)


def _position_scheme(stack: TransformerStack, absolute: bool) -> str:
    if stack.rope is not None:
        return "RoPE: Q and K rotated by position"
    if stack.relative_bias is not None:
        return f"T5 relative buckets: table {tuple(stack.relative_bias.table().shape)} added to the scores"
    if stack.relative_position == "alibi":
        return "ALiBi: -slope·|i-j| added to the scores, slopes " + _vec(stack.alibi, 4)
    return "absolute, added to the embeddings" if absolute else "none"


def _score_formula(stack: TransformerStack, attn: Attention, scores: torch.Tensor) -> str:
    scale = attn.core.scale if attn.core.scale is not None else attn.head_dim ** -0.5
    terms = [f"Q·Kᵀ × {scale:.4f}"]
    if not attn.cross and stack.relative_bias is not None:
        terms.append("T5 bias")
    if not attn.cross and stack.relative_position == "alibi":
        terms.append("ALiBi bias")
    if attn.core.causal:
        terms.append("causal mask")
    if attn.core.window is not None:
        terms.append(f"window {attn.core.window}")
    masked = "; masked keys score -inf" if bool(torch.isinf(scores).any()) else ""
    return " + ".join(terms) + masked


def _byte_level_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet, symbol → byte: printable bytes stand for themselves, the others
    (space, newline, tab, ...) are shifted to 256 + n, which is why a space prints as Ġ, a newline as Ċ."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(shifted)}}


BYTE_LEVEL = _byte_level_unicode()


def _decoded(label: str) -> Optional[str]:
    """The text a byte-level BPE symbol stands for ('Ġmain' → ' main'), None when it is not one."""
    if not label or not any(BYTE_LEVEL.get(c, 0) in (9, 10, 13, 32) or ord(c) > 255 for c in label):
        return None
    if not all(c in BYTE_LEVEL for c in label):
        return None
    return bytes(BYTE_LEVEL[c] for c in label).decode("utf-8", errors="replace")


def _print_tokens(walk: Pass) -> None:
    for name, ids in walk.ids.items():
        if ids:
            shown = [_decoded(label) for label in walk.labels[name]]
            print(f"\ntokens of the {name} input ({len(ids)}):\n    pos  id       token" + ("    (text)" * any(shown)))
            for i, (t, label, text) in enumerate(zip(ids, walk.labels[name], shown)):
                print(f"    {i:<4} {t:<8} {label!r}" + (f"    ({text!r})" if text is not None else ""))
            if any(shown):
                print("    byte-level BPE symbols: Ġ is a space, Ċ a newline, ĉ a tab (bytes below 33 are shown "
                      "shifted by 256); (text) is what the token stands for")


def _print_embeddings(net: nn.Module, rec: Recording, n: int) -> None:
    print(f"\nembeddings: each table, and its output at the first positions (first {n} values)")
    kinds = (nn.Embedding, LearnedPositions, SinusoidalPositions, PatchEmbedding)
    for name, m in net.named_modules():
        if not isinstance(m, kinds) or name not in rec.outputs:
            continue
        table = m.proj.weight if isinstance(m, PatchEmbedding) else getattr(m, "weight", getattr(m, "table", None))
        out = rec.outputs[name]
        what = "conv kernels" if isinstance(m, PatchEmbedding) else "table"
        print(f"  {name}: {type(m).__name__}, {what} {_shape(table)} → output {_shape(out)}")
        for i in range(min(out.shape[1], MAX_ROWS)):
            print(f"    pos {i:<4} {_vec(out[0, i], n)}")


def _block_lines(prefix: str, block, rec: Recording, head: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, tensor, first values) of one block's steps, in the order the block computes them."""
    lines, norm = [], type(block.mlp_norm).__name__

    def step(label: str, name: str, inputs: bool = False) -> None:
        t = (rec.inputs if inputs else rec.outputs)[f"{prefix}{name}"]
        lines.append((label, t, t[0, 0]))

    step("x, the block input", "", inputs=True)
    for kind in ("self_attn", "cross_attn"):
        attn = getattr(block, kind)
        if attn is None:
            continue
        if block.prenorm:
            step(f"{norm}(x) → {kind} input", f".{kind}_norm")
        r, src = rec.attention[f"{prefix}.{kind}"], "context" if attn.cross else "x"
        kv = head // (attn.n_head // attn.n_kv_head)  # the key/value head this query head reads (GQA)
        lines += [(f"Q = x·W_q (head {head})", r.q, r.q[0, head, 0]),
                  (f"K = {src}·W_k (kv head {kv})", r.k, r.k[0, kv, 0]),
                  (f"V = {src}·W_v (kv head {kv})", r.v, r.v[0, kv, 0]),
                  ("scores (row 0)", r.scores, r.scores[0, head, 0]),
                  ("weights = softmax(scores) (row 0)", r.weights, r.weights[0, head, 0])]
        step("attention output, after W_o", f".{kind}")
        if not block.prenorm:
            step(f"{norm}(x + {kind})", f".{kind}_norm")
    if block.prenorm:
        step(f"{norm}(x) → MLP input", ".mlp_norm")
    step(f"MLP hidden {'act(x·W_gate) ⊙ x·W_up' if block.mlp.gated else 'act(x·W_up)'}, {block.mlp.activation}",
         ".mlp.down_proj", inputs=True)
    step("MLP output, after W_down", ".mlp")
    if not block.prenorm:
        step(f"{norm}(x + MLP)", ".mlp_norm")
    step("block output", "")
    return lines


def _print_stack(name: str, stack: TransformerStack, rec: Recording, labels: list[str], head: int, n: int) -> None:
    first = stack.layers[0]
    a, x0 = first.self_attn, rec.inputs[f"{name}.layers.0"]
    arrangement = "pre-norm x + f(norm(x))" if first.prenorm else "post-norm norm(x + f(x))"
    print(f"\n== {name}: {len(stack.layers)} blocks, d_model {x0.shape[-1]}, {a.n_head} heads × {a.head_dim}"
          + (f" ({a.n_kv_head} key/value heads)" if a.n_kv_head != a.n_head else "")
          + f", {'causal' if stack.causal else 'bidirectional'}, {arrangement}, {type(first.mlp_norm).__name__}")
    absolute = any(isinstance(m, (LearnedPositions, SinusoidalPositions)) for m in rec.model.modules())
    print(f"  positions: {_position_scheme(stack, absolute)}")
    print(f"  input {_shape(x0)}, the embedded sequence:")
    for i in range(min(x0.shape[1], MAX_ROWS)):
        print(f"    {i:<4} {labels[i][:12]!r:<16} {_vec(x0[0, i], n)}")
    for i, block in enumerate(stack.layers):
        print(f"  layer {i}")
        for label, t, values in _block_lines(f"{name}.layers.{i}", block, rec, head):
            print(_line(label, t, values, n))
    if stack.norm is not None:
        out = rec.outputs[f"{name}.norm"]
        print(_line(f"final {type(stack.norm).__name__}", out, out[0, 0], n))


def _print_attention(name, stack, layer, head, rec, labels, context_labels, out_dir: Path) -> list[Path]:
    """The chosen head's scores and weights as tables, and every head's weights as one heatmap."""
    paths = []
    for kind in ("self_attn", "cross_attn"):
        attn = getattr(stack.layers[layer], kind)
        if attn is None:
            continue
        key = f"{name}.layers.{layer}.{kind}"
        cols = labels if kind == "self_attn" else context_labels
        r = rec.attention[key]  # batch row 0, cropped to its labelled (unpadded) positions
        scores, weights = r.scores[0, :, :len(labels), :len(cols)], r.weights[0, :, :len(labels), :len(cols)]
        print(f"\n== {key}, head {head} of {attn.n_head} (rows: queries, columns: keys)")
        print(f"  scores = {_score_formula(stack, attn, scores[head])}")
        print("\n".join(_matrix(scores[head], labels, cols)))
        print("  weights = softmax(scores), each row sums to 1")
        print("\n".join(_matrix(weights[head], labels, cols)))
        path = out_dir / f"{key.replace('.', '-')}.png"
        try:
            _heatmap(weights, labels, cols, f"{key}: attention weights", path)
        except ImportError:
            print("  (no heatmap: it needs matplotlib; pip install matplotlib)")
            continue
        print(f"  heatmap of all {attn.n_head} heads: {path}")
        paths.append(path)
    return paths


def _select_stacks(net: nn.Module, which: Optional[str], layer: int, head: int) -> list[tuple[str, TransformerStack]]:
    stacks = [(n, m) for n, m in net.named_modules() if isinstance(m, TransformerStack)]
    chosen = [(n, m) for n, m in stacks if not which or n == which or n.startswith(which)]
    if not chosen:
        raise ZooError(f"--stack {which} names no stack of this model; choose one of {', '.join(n for n, _ in stacks)}")
    hint = "; pick one stack with --stack" if len(chosen) > 1 else ""
    for n, m in chosen:
        if not 0 <= layer < len(m.layers):
            raise ZooError(f"--layer {layer} is out of range: {n} has {len(m.layers)} layers "
                           f"(0..{len(m.layers) - 1}){hint}")
        heads = m.layers[layer].self_attn.n_head
        if not 0 <= head < heads:
            raise ZooError(f"--head {head} is out of range: {n} has {heads} heads (0..{heads - 1}){hint}")
    return chosen


def _load(model: str) -> tuple[nn.Module, Any, str]:
    from zoo.checkpoint import load_model

    from zoo.families import family_of

    net, tok = load_model(model)
    if tok is None:
        raise ZooError(f"'{model}' carries no tokenizer; save tokenizer.json beside the weights")
    return net.eval(), tok, family_of(net).name


def _print_predictions(sections: list[tuple[str, list[tuple]]], id_name: str) -> None:
    print("\n== prediction (softmax of the logits)")
    for heading, rows in sections:
        print(f"  top-{len(rows)} {heading}:")
        for rank, i, token, p, logit in rows:
            print(f"    #{rank:<3} {id_name}={i:<7} {token:<28} p={p:.6f}  logit={logit:+.4f}")


def inspect_model(model: str, text: str, layer: int = 0, head: int = 0, top_k: int = 5, out_dir: str = "inspect",
                  max_values: int = 4, decoder_text: str = "", image: Optional[str] = None,
                  stack: Optional[str] = None) -> dict:
    """Run `zoo inspect` (see `zoo.cli.inspect` for the arguments); returns the printed predictions,
    the heatmap paths and the `Recording`."""
    if not text or not text.strip():
        raise ZooError('--text is empty; give the text to run through the model, e.g. --text "The cat sat"')
    if top_k < 1 or max_values < 1:
        raise ZooError(f"--top_k ({top_k}) and --max_values ({max_values}) must be at least 1")
    net, tok, family = _load(model)
    chosen = _select_stacks(net, stack, layer, head)
    from zoo.families import get

    walk = resolve(get(family).inspect_pass)(net, tok, text, decoder_text, image)
    rec = Recording(net)
    with torch.no_grad(), rec.active():
        try:
            out = walk.run()
        except ValueError as err:  # a length or shape the model refuses
            raise ZooError(str(err)) from None
    params, dtype = sum(p.numel() for p in net.parameters()), next(net.parameters()).dtype
    print(f"zoo inspect: {model}\n  {family} ({type(net).__name__}), {params:,} parameters, eval mode, {dtype}")
    print(f"  vectors show their first {max_values} values at batch 0, position 0 (Q, K, V: head {head})")
    for note in walk.notes:
        print(f"  {note}")
    _print_tokens(walk)
    _print_embeddings(net, rec, max_values)
    for name, m in net.named_modules():
        if isinstance(m, TransformerStack):
            _print_stack(name, m, rec, walk.labels[name], head, max_values)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    heatmaps = [path for name, m in chosen for path in _print_attention(
        name, m, layer, head, rec, walk.labels[name], walk.labels.get("encoder"), directory)]
    sections = walk.predict(out, top_k)
    _print_predictions(sections, "caption" if isinstance(net, ImageTextModel) else "id")
    return {"family": family, "predictions": sections, "heatmaps": heatmaps, "recording": rec}
