"""Structured pruning removes neurons (and GPT heads) physically; unstructured pruning zeroes weights."""

import pytest
import torch

from tests.compress.conftest import outputs, tiny
from zoo.compress.prune import magnitude_prune, prune_structured, save_checkpoint, stacks
from zoo.errors import ZooError


def test_nothing_pruned_is_the_same_model(family):
    model = tiny(family)
    same = prune_structured(model, target=1.0, heads=family == "gpt")
    assert torch.equal(outputs(same), outputs(model))


def test_pruned_model_is_smaller_and_keeps_the_kept_neurons(family):
    model = tiny(family)
    small = prune_structured(model, target=0.7)
    n0, n1 = model.num_parameters(non_embedding=True), small.num_parameters(non_embedding=True)
    assert abs(n1 / n0 - 0.7) < 0.03
    for name, stack in stacks(small).items():
        big = stacks(model)[name]
        k = stack.config.block.mlp.d_ff
        assert k < big.config.block.mlp.d_ff
        for layer, ref in zip(stack.layers, big.layers):
            assert layer.mlp.up_proj.weight.shape == (k, ref.mlp.up_proj.in_features)
            assert layer.mlp.down_proj.weight.shape == (ref.mlp.down_proj.out_features, k)
            # the kept rows are rows of the original, in order
            rows = (layer.mlp.up_proj.weight[:, None] == ref.mlp.up_proj.weight[None]).all(-1).nonzero()[:, 1]
            assert len(rows) == k and bool((rows.diff() > 0).all())
    assert outputs(small).shape == outputs(model).shape


def test_gpt_heads_removed():
    model = tiny("gpt")
    small = prune_structured(model, target=0.6, heads=True)
    assert small.config.n_head < model.config.n_head and small.config.head_dim == 16
    attn = small.decoder.layers[0].self_attn
    assert attn.q_proj.weight.shape == (small.config.n_head * 16, 64) and attn.o_proj.weight.shape[1] == attn.q_proj.weight.shape[0]
    with pytest.raises(ZooError, match="cannot be removed"):
        prune_structured(tiny("bert"), 0.7, heads=True)
    with pytest.raises(ZooError, match="cannot be reached"):
        prune_structured(model, target=0.1)


def test_pruned_model_trains_saves_loads_and_exports(family, tmp_path):
    from zoo.checkpoint import model_from_checkpoint
    from zoo.interop.hf import to_hf

    small = prune_structured(tiny(family), target=0.7).train()
    opt = torch.optim.SGD(small.parameters(), lr=0.1)
    with torch.enable_grad():
        out = _train_output(small)
        out.pow(2).mean().backward()
    before = [p.detach().clone() for p in small.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, small.parameters()))
    save_checkpoint(small.eval(), tmp_path / "p.ckpt")
    loaded, _ = model_from_checkpoint(tmp_path / "p.ckpt")
    assert loaded.config == small.config
    torch.testing.assert_close(outputs(loaded), outputs(small), rtol=0, atol=0)
    to_hf(loaded, tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()


def _train_output(model):
    from tests.compress.conftest import V
    from zoo.models.base import ImageTextModel

    ids = torch.randint(3, V - 1, (2, 8))
    if isinstance(model, ImageTextModel):
        return model.encode_image(torch.randn(2, 3, 16, 16))
    from zoo.models.base import Seq2SeqModel

    return model(ids, decoder_input_ids=ids) if isinstance(model, Seq2SeqModel) else model.features(ids)


def test_magnitude_pruning_zeroes_weights_and_keeps_shapes():
    model = tiny("gpt")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    sparsity = magnitude_prune(model, 0.5)
    assert abs(sparsity - 0.5) < 0.01
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert not any("weight_orig" in k for k in model.state_dict())


def test_gradient_scores_choose_the_kept_neurons():
    from tests.compress.conftest import V
    from zoo.compress.prune import taylor_scores

    model = tiny("gpt")
    ids = torch.randint(3, V - 1, (2, 12), generator=torch.Generator().manual_seed(0))
    scores = taylor_scores(model, lambda m, b: m(b, labels=b), [ids])
    assert set(scores) == {"decoder.layers.0.mlp", "decoder.layers.1.mlp"}
    assert scores["decoder.layers.0.mlp"].shape == (128,) and bool((scores["decoder.layers.0.mlp"] > 0).any())
    assert all(p.grad is None for p in model.parameters())
    forced = {name: torch.arange(128, dtype=torch.float) for name in scores}  # keeps the last neurons
    small = prune_structured(model, 0.7, scores=forced)
    k = small.config.d_ff
    torch.testing.assert_close(small.decoder.layers[0].mlp.up_proj.weight, model.decoder.layers[0].mlp.up_proj.weight[-k:])
