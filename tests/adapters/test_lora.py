"""LoRA from outside the model (`zoo.add_lora`, `zoo.merge_lora`) on every family: a zero B leaves the
outputs unchanged, merging equals the unmerged adapter, frozen parameters get no gradient and never
reach the optimizer, quantized-style layers can be wrapped, and adapter-only checkpoints rebuild."""

from dataclasses import asdict

import pytest
import torch
from torch import nn

import zoo
from tests.interop.helpers import build, save_checkpoint, tokenizer
from zoo.adapters import LoRAConfig, LoRALinear, lora_layers
from zoo.errors import ZooError

FAMILIES = ["gpt", "bert", "t5", "bart", "clip"]


def outputs(family, model):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 200, (2, 9), generator=g)
    with torch.no_grad():
        if family == "clip":
            return model(torch.randn(2, 3, 16, 16, generator=g), ids).logits_per_image
        if family in ("t5", "bart"):
            return model(ids, decoder_input_ids=ids[:, :5])
        if family == "bert":
            return model.mlm_logits(model.encode(ids))
        return model(ids)


def randomize_adapters(model, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * std)


@pytest.fixture(scope="module")
def tokenizers():
    return {f: tokenizer(f) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_b_leaves_outputs_unchanged_and_merge_equals_unmerged(family, tokenizers):
    model = build(family, tokenizers[family])
    before = outputs(family, model)
    zoo.add_lora(model, r=4, alpha=8, targets="all-linear")
    layers = lora_layers(model)
    assert layers and all(torch.equal(m.lora_B.weight, torch.zeros_like(m.lora_B.weight)) for m in layers.values())
    assert torch.equal(outputs(family, model), before)  # B = 0: exactly the same function
    randomize_adapters(model)
    adapted = outputs(family, model)
    assert (adapted - before).abs().max() > 1e-2  # the adapters act
    zoo.merge_lora(model)
    assert not lora_layers(model) and all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("q_proj"))
    assert (outputs(family, model) - adapted).abs().max() <= 1e-5


def test_names_follow_peft_and_targets_match_by_suffix(tokenizers):
    model = zoo.add_lora(build("gpt", tokenizers["gpt"]), targets=("q_proj", "mlp.down_proj"))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(f"decoder.layers.{i}.{m}.lora_{ab}.weight" for i in range(2)
                               for m in ("self_attn.q_proj", "mlp.down_proj") for ab in "AB")
    assert "decoder.layers.0.self_attn.q_proj.base_layer.weight" in model.state_dict()
    with pytest.raises(ZooError, match="match no linear layer"):
        zoo.add_lora(build("gpt", tokenizers["gpt"]), targets=["query"])


def test_frozen_parameters_get_no_gradient_and_stay_out_of_the_optimizer(tokenizers):
    from zoo.tasks import SequenceClassification
    from zoo.tasks.base import parameter_groups

    model = build("bert", tokenizers["bert"], pooler=True)
    task = SequenceClassification(model, num_labels=3, mode="head",
                                  lora=LoRAConfig(r=4, alpha=8, targets=["q_proj", "v_proj"], trainable=["pooler"]))
    task.configure_model()
    task.train()
    ids = torch.randint(5, 150, (3, 7))
    logits = task.classifier(task.model.features(ids))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in task.named_parameters()
                         if ".lora_" in n or n.startswith(("model.pooler.", "classifier."))}
    for name, p in task.named_parameters():
        assert (p.grad is None) == (name not in trainable), name
    grouped = {id(p) for g in parameter_groups(task) for p in g["params"]}
    assert grouped == {id(p) for n, p in task.named_parameters() if n in trainable}


class Int8Linear(nn.Module):
    """A stand-in for a quantized linear (torchao/bitsandbytes keep weight, in_features, out_features)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scale = linear.weight.abs().amax(1, keepdim=True) / 127
        self.register_buffer("weight", torch.round(linear.weight / scale).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x @ (self.weight.float() * self.scale).t()


def test_wraps_quantized_layers_and_refuses_to_merge_into_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8))
    model[0] = Int8Linear(model[0])
    x = torch.randn(4, 8)
    before = model(x)
    zoo.add_lora(model, r=2, targets=["0"])
    assert isinstance(model[0], LoRALinear) and model[0].lora_A.weight.dtype == torch.float32
    assert torch.equal(model(x), before)
    with pytest.raises(ZooError, match="not a float nn.Linear"):
        zoo.merge_lora(model)


def test_adapter_only_checkpoint_is_small_and_rebuilds_base_plus_adapters(tmp_path, tokenizers):
    from zoo.checkpoint import model_from_checkpoint
    from zoo.tasks import CausalLM

    tok = tokenizers["gpt"]
    model = build("gpt", tok, n_layer=4, d_model=64)
    base = save_checkpoint(tmp_path / "base.ckpt", model, tok)
    task = CausalLM(build("gpt", tok, n_layer=4, d_model=64),  # the same weights again: build() is seeded
                    lora=LoRAConfig(r=2, alpha=4, save_adapters_only=True, base=str(base)))
    task.configure_model()
    randomize_adapters(task.model)
    ckpt = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == {n for n, p in task.named_parameters() if p.requires_grad}
    assert ckpt["zoo"]["lora"] == {**asdict(task.lora), "base": str(base)}
    torch.save(ckpt, tmp_path / "adapters.ckpt")
    assert (tmp_path / "adapters.ckpt").stat().st_size < base.stat().st_size / 5
    rebuilt, _ = model_from_checkpoint(tmp_path / "adapters.ckpt")
    assert len(lora_layers(rebuilt)) == 8
    assert (outputs("gpt", rebuilt) - outputs("gpt", task.model.eval())).abs().max() <= 1e-6
    from zoo.tasks.classification import load_pretrained

    merged = load_pretrained(build("gpt", tok, n_layer=4, d_model=64), str(tmp_path / "adapters.ckpt"))  # init_from
    assert not lora_layers(merged)
    assert (outputs("gpt", merged.eval()) - outputs("gpt", task.model)).abs().max() <= 1e-5
    base.unlink()
    with pytest.raises(ZooError, match="adapters only"):
        model_from_checkpoint(tmp_path / "adapters.ckpt")


def test_all_linear_given_as_a_one_item_list_means_all_linear():
    """`--model.init_args.lora.targets all-linear` (or a YAML list) arrives as ["all-linear"]."""
    a, b = build("gpt", tokenizer("gpt")), build("gpt", tokenizer("gpt"))
    zoo.add_lora(a, r=2, targets="all-linear")
    zoo.add_lora(b, r=2, targets=["all-linear"])
    assert sorted(lora_layers(a)) == sorted(lora_layers(b)) and len(lora_layers(a)) > 2


def test_adapters_rebuild_over_a_base_whose_config_differs_only_in_dropout(tmp_path, tokenizers):
    """A fine-tuning config may change dropout (configs/gpt/classify-lora.yaml: 0.2 over a 0.1 base): the base
    still loads under the adapters, as `init_from` loaded it; a base of another shape is still refused."""
    from zoo.checkpoint import model_from_checkpoint
    from zoo.tasks import CausalLM

    tok = tokenizers["gpt"]
    base = save_checkpoint(tmp_path / "base.ckpt", build("gpt", tok, dropout=0.1), tok)
    task = CausalLM(build("gpt", tok, dropout=0.2), lora=LoRAConfig(r=2, save_adapters_only=True, base=str(base)))
    task.configure_model()
    randomize_adapters(task.model)
    ckpt = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "adapters.ckpt")
    rebuilt, _ = model_from_checkpoint(tmp_path / "adapters.ckpt")
    assert rebuilt.config.dropout == 0.2
    assert (outputs("gpt", rebuilt.eval()) - outputs("gpt", task.model.eval())).abs().max() <= 1e-6
    save_checkpoint(base, build("gpt", tok, d_model=48), tok)  # the named base now has other shapes
    with pytest.raises(ZooError, match="not the model the adapters"):
        model_from_checkpoint(tmp_path / "adapters.ckpt")
