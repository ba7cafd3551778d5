"""QLoRA: full-precision LoRA adapters train over a frozen int8 base (CPU), and export as PEFT adapters."""

import pytest
import torch

from tests.compress.conftest import V, tiny
from zoo.adapters import lora_layers, save_peft
from zoo.compress.qlora import qlora

pytest.importorskip("torchao")


def test_lora_over_int8_base_trains_only_the_adapters(tmp_path):
    from safetensors.torch import load_file

    model = qlora(tiny("gpt"), "int8-weight", r=4, generator=torch.Generator().manual_seed(0)).train()
    layers = lora_layers(model)
    assert len(layers) == 12
    base = {n: l.base_layer.weight.qdata.clone() for n, l in layers.items()}
    assert all(type(l.base_layer.weight).__name__ == "Int8Tensor" for l in layers.values())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 24 and all(p.dtype == torch.float32 and type(p) is torch.nn.Parameter for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(3, V - 1, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        loss = model(ids, labels=ids)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05
    assert all(torch.equal(l.base_layer.weight.qdata, base[n]) for n, l in layers.items())
    save_peft(model, tmp_path)
    adapter = load_file(str(tmp_path / "adapter_model.safetensors"))
    # GPT-2 names: q, k, v fuse into c_attn (c_attn, c_proj, c_fc, mlp c_proj per layer, A and B each)
    assert len(adapter) == 16 and all(t.dtype == torch.float32 for t in adapter.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lora_over_nf4_base_on_cuda():
    pytest.importorskip("bitsandbytes")
    from zoo.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=256, max_seq_len=32, d_model=128, n_layer=2, n_head=4)).cuda()
    model = qlora(model, "nf4", r=4).train()
    ids = torch.randint(0, 256, (4, 16), device="cuda")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    first = None
    for _ in range(8):
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(ids, labels=ids)
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else float(loss)
    assert float(loss) < first


def test_the_lora_option_quantizes_the_base_first_and_saves_float_adapters(tmp_path):
    """`lora: {quantize: int8-weight, save_adapters_only: true}` in YAML: the task's model gets an int8 base
    (torchao) under float adapters, only the adapters reach the optimizer, a few steps train them, and the
    adapter-only checkpoint rebuilds as the float base plus those adapters, close to the quantized model."""
    from tests.adapters.test_lora import outputs, randomize_adapters
    from tests.interop.helpers import build, save_checkpoint, tokenizer
    from zoo.adapters import LoRAConfig
    from zoo.checkpoint import model_from_checkpoint
    from zoo.tasks import CausalLM
    from zoo.tasks.base import parameter_groups

    tok = tokenizer("gpt")
    base = save_checkpoint(tmp_path / "base.ckpt", build("gpt", tok, n_layer=2, d_model=64), tok)
    task = CausalLM(build("gpt", tok, n_layer=2, d_model=64),
                    lora=LoRAConfig(r=4, alpha=8, targets="all-linear", save_adapters_only=True, base=str(base),
                                    quantize="int8-weight"))
    task.configure_model()
    layers = lora_layers(task.model)
    assert len(layers) == 12 and all(type(l.base_layer.weight).__name__ == "Int8Tensor" for l in layers.values())
    in_optimizer = [p for group in parameter_groups(task) for p in group["params"]]
    assert {id(p) for p in in_optimizer} == {id(p) for l in layers.values() for p in (l.lora_A.weight, l.lora_B.weight)}
    opt = torch.optim.AdamW(in_optimizer, lr=1e-2)
    ids = torch.randint(3, 200, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(6):
        loss = task.model(ids, labels=ids)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    randomize_adapters(task.model, std=0.05)  # an update large enough to see through the int8 error
    ckpt = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == {n for n, p in task.named_parameters() if p.requires_grad}
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in ckpt["state_dict"].values())
    assert ckpt["zoo"]["lora"]["quantize"] == "int8-weight"
    torch.save(ckpt, tmp_path / "adapters.ckpt")
    rebuilt, _ = model_from_checkpoint(tmp_path / "adapters.ckpt")
    assert all(type(l.base_layer.weight) is torch.nn.Parameter for l in lora_layers(rebuilt).values())  # float base
    got, want = outputs("gpt", rebuilt.eval()), outputs("gpt", task.model.eval())
    assert 0 < float((got - want).norm() / want.norm()) < 0.02
    base_only, _ = model_from_checkpoint(base)
    assert float((outputs("gpt", base_only) - want).norm() / want.norm()) > 0.05  # the adapters are in it


def test_the_lora_option_refuses_to_quantize_without_adapter_only_checkpoints(tmp_path):
    from tests.interop.helpers import build, tokenizer
    from zoo.adapters import LoRAConfig
    from zoo.errors import ZooError
    from zoo.tasks import CausalLM

    tok = tokenizer("gpt")
    task = CausalLM(build("gpt", tok, n_layer=2, d_model=64), lora=LoRAConfig(quantize="int8-weight"))
    with pytest.raises(ZooError, match="save_adapters_only"):
        task.configure_model()
