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
