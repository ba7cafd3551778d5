"""The family registry and the typed model contract (zoo/families.py, zoo/models/base.py), typed block
configs, and the one backend switch."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from zoo import families
from zoo.blocks import ScaledDotProduct, set_attention_impl, set_norm_impl
from zoo.blocks import backend as backend_module
from zoo.errors import ZooError
from zoo.families import FAMILIES, Capability
from zoo.models import Bart, BartConfig, Bert, BertConfig, GPT, GPTConfig, T5, T5Config
from zoo.models.base import INTERFACES

ROOT = Path(__file__).resolve().parents[1]


def tiny(name: str):
    small = dict(vocab_size=64, d_model=32, n_layer=1, n_head=4)
    configs = {
        "gpt": dict(small, max_seq_len=16), "bert": dict(small, max_seq_len=16),
        "t5": dict(small, d_kv=8, d_ff=64), "bart": dict(small, max_seq_len=16, d_ff=64),
        "clip": dict(vocab_size=64, projection_dim=16, vision=dict(image_size=16, patch_size=8, d_model=32, n_layer=1,
                                                                   n_head=4),
                     text=dict(max_seq_len=16, d_model=32, n_layer=1, n_head=4, eos_token_id=3)),
    }
    return FAMILIES[name].build(configs[name]).eval()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_declared_capabilities_are_the_interfaces_the_model_implements(name):
    family = FAMILIES[name]
    implemented = {cap for cap, interface in INTERFACES.items() if issubclass(family.model, interface)}
    assert implemented == set(family.capabilities)
    model = tiny(name)
    assert families.family_of(model) is family and families.capabilities(model) == family.capabilities
    assert all(callable(getattr(model, m)) for m in family.entry_points)
    assert family.converter("import").__name__ == "convert"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_gives_features_of_its_declared_width(name):
    model = tiny(name)
    ids = torch.randint(4, 60, (3, 7))
    ids[:, -1] = 3  # CLIP pools at its end-of-text id
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    ids[0, 4] = 3
    feats = model.features(ids, mask)
    assert feats.shape == (3, model.feature_dim) and torch.isfinite(feats).all()
    # right padding does not change a row's features
    alone = model.features(ids[:1, :5], mask[:1, :5])
    torch.testing.assert_close(feats[:1], alone, atol=1e-5, rtol=1e-5)


def test_a_missing_capability_is_one_line_naming_what_the_family_offers():
    with pytest.raises(ZooError, match=r"^generation needs a model with seq2seq; a bert model offers features, masked_lm$"):
        families.require(tiny("bert"), Capability.SEQ2SEQ, "generation")
    with pytest.raises(ZooError, match="not a zoo model"):
        families.family_of(torch.nn.Linear(2, 2))
    with pytest.raises(ZooError, match="model_type 'gpt_neox' is not supported; zoo loads bart, bert, clip, gpt2"):
        families.by_hf_model_type("gpt_neox")


def test_no_family_name_comparisons_or_capability_probes_outside_the_registry():
    """The contract is asked by type: `family == "..."` and `hasattr(model, ...)` appear nowhere else."""
    names = "|".join(FAMILIES)
    probes = ("generate|pooled|features|encode|decode|shift_right|hidden_states|is_encoder_decoder|family|config|"
              "mlm_logits|encode_text|encode_image|feature_dim")
    pattern = re.compile(rf"""family[\w.]*\s*[!=]=\s*["']({names})["']|["']({names})["']\s*[!=]=\s*[\w.]*family|"""
                         rf"""family[\w.]*\s+(not\s+)?in\s+\(["']({names})|(hasattr|getattr)\([\w.()]*,\s*["']({probes})["']""")
    offenders = []
    for folder in ("zoo", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "families.py" and path.parent.name == "zoo":
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_bart_activation_dropout_applies_when_residual_dropout_is_zero():
    """The block config travels whole: BART's MLP drops out by `activation_dropout` even with `dropout: 0`
    (before, the MLP held an nn.Identity and the value was patched onto it, silently lost)."""
    cfg = BartConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layer=1, n_head=4, d_ff=64, dropout=0.0,
                     attn_dropout=0.0, activation_dropout=0.3)
    model = Bart(cfg)
    for block in (*model.encoder.layers, *model.decoder.layers):
        assert isinstance(block.mlp.dropout, torch.nn.Dropout) and block.mlp.dropout.p == 0.3
        assert block.config.dropout == 0.0 and block.config.mlp.dropout == 0.3
    ids = torch.randint(4, 60, (2, 9))
    model.train()
    a, b = (model(ids, decoder_input_ids=ids) for _ in range(2))
    assert not torch.allclose(a, b)  # dropout is live in training
    model.eval()
    torch.testing.assert_close(model(ids, decoder_input_ids=ids), model(ids, decoder_input_ids=ids))


def test_bert_has_no_dropout_inside_its_mlp_and_gpt_keeps_its_own():
    bert = Bert(BertConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layer=1, n_head=4, dropout=0.2))
    assert isinstance(bert.encoder.layers[0].mlp.dropout, torch.nn.Identity)
    gpt = GPT(GPTConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layer=1, n_head=4, dropout=0.2))
    assert gpt.decoder.layers[0].mlp.dropout.p == 0.2 and gpt.decoder.layers[0].dropout.p == 0.2


def test_attention_projections_are_used_as_they_are():
    """No weight is concatenated per call: the three projections run as their own modules."""
    model = tiny("gpt")
    seen = []
    for name, module in model.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj")):
            module.register_forward_hook(lambda m, a, o, n=name: seen.append(n))
    real_cat = torch.cat
    concatenated_weights = []

    def spy(tensors, *args, **kwargs):
        if any(isinstance(t, torch.nn.Parameter) for t in tensors):
            concatenated_weights.append(True)
        return real_cat(tensors, *args, **kwargs)

    torch.cat = spy
    try:
        model(torch.randint(0, 60, (2, 5)))
    finally:
        torch.cat = real_cat
    assert sorted(seen) == sorted(f"decoder.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj"))
    assert not concatenated_weights


def test_set_attention_impl_switches_every_attention_and_logs_a_fallback_once(caplog, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(backend_module, "_warned", set())
    model = T5(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, n_layer=1, n_head=4, dropout=0.0,
                        attn_dropout=0.0)).eval()
    ids = torch.randint(4, 60, (2, 6))
    want = model(ids, decoder_input_ids=ids)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        assert set_attention_impl(model, "triton") is model
        set_norm_impl(model, "triton")
        cores = [m for m in model.modules() if isinstance(m, ScaledDotProduct)]
        assert len(cores) == 3 and all(c.impl == "triton" for c in cores)
        got = model(ids, decoder_input_ids=ids)
        model(ids, decoder_input_ids=ids)
    torch.testing.assert_close(got, want)  # torch ran, computing the same function
    falls = [r.getMessage() for r in caplog.records if "falls back to 'torch'" in r.getMessage()]
    assert len(falls) == 1 and "need a CUDA device" in falls[0] and "TRITON_INTERPRET=1" in falls[0]
    with pytest.raises(ValueError, match="unknown attention impl 'flash'"):
        set_attention_impl(model, "flash")


def test_triton_with_attention_dropout_logs_why_it_runs_torch(caplog, monkeypatch):
    monkeypatch.setattr(backend_module, "_warned", set())
    model = GPT(GPTConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layer=1, n_head=4, attn_dropout=0.1,
                          attn_impl="triton")).train()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        model(torch.randint(0, 60, (2, 5)))
        model(torch.randint(0, 60, (2, 5)))
    falls = [r.getMessage() for r in caplog.records if "attention dropout" in r.getMessage()]
    assert len(falls) == 1 and "attn_dropout: 0.0" in falls[0]


def test_shared_default_configs_are_not_shared_objects():
    a, b = GPT(), GPT()
    assert a.config == b.config and a.config is not b.config
