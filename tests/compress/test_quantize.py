"""torchao quantization of every family: close to float, smaller on disk, loaded without unpickling."""

import json
import subprocess
import sys

import pytest
import torch

from tests.compress.conftest import outputs, tiny
from zoo.compress import load_quantized, quantize, save_quantized
from zoo.compress.quantize import check_scheme, quantizable_linears
from zoo.errors import ZooError

pytest.importorskip("torchao")

# Relative error ‖q − f‖ / ‖f‖ of the outputs: int8 per-channel weights cost ~0.5%, per-token int8
# activations about as much again; 3% leaves room for the random tiny models.
RTOL = 0.03
CPU_SCHEMES = ["int8-weight", "int8-dynamic"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("scheme", CPU_SCHEMES)
def test_quantized_close_smaller_and_reloads(family, scheme, tmp_path):
    ref_model = tiny(family)
    ref = outputs(ref_model)
    q = quantize(tiny(family), scheme)
    assert len(quantizable_linears(q)) > 0
    assert all(type(m.weight).__name__ == "Int8Tensor" for m in quantizable_linears(q).values())
    got = outputs(q)
    assert 0 < rel_err(got, ref) < RTOL
    save_quantized(q, tmp_path / "q", scheme)
    save_quantized(ref_model, tmp_path / "f", "none")  # same writer, float weights, as the size baseline
    q_size = (tmp_path / "q" / "model.safetensors").stat().st_size
    f_size = (tmp_path / "f" / "model.safetensors").stat().st_size
    assert q_size < f_size
    loaded, _ = load_quantized(tmp_path / "q")
    torch.testing.assert_close(outputs(loaded), got, rtol=0, atol=0)


def test_saved_file_holds_plain_tensors_only(tmp_path):
    from safetensors import safe_open

    save_quantized(quantize(tiny("gpt"), "int8-weight"), tmp_path, "int8-weight")
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert all(type(f.get_tensor(k)) is torch.Tensor for k in keys)
    assert any(k.endswith(".__qdata") for k in keys) and any(k.endswith(".__scale") for k in keys)
    assert json.loads((tmp_path / "zoo.json").read_text())["scheme"] == "int8-weight"
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))


def test_cuda_schemes_say_they_need_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    for scheme in ("int4-weight", "float8"):
        with pytest.raises(ZooError, match="needs a CUDA GPU"):
            check_scheme(scheme, "cpu")
    with pytest.raises(ZooError, match="unknown quantization scheme"):
        check_scheme("int3", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scheme", ["int4-weight", "float8"])
def test_cuda_schemes(scheme, tmp_path):
    from zoo.models import GPT, GPTConfig

    torch.manual_seed(0)  # widths that are multiples of int4's group of 128 input features
    model = GPT(GPTConfig(vocab_size=256, max_seq_len=32, d_model=128, n_layer=2, n_head=4, d_ff=256)).eval().cuda()
    ref = model(torch.arange(12, device="cuda")[None]).float()
    q = quantize(model, scheme)
    got = q(torch.arange(12, device="cuda")[None]).float()
    assert rel_err(got, ref) < 0.15
    save_quantized(q, tmp_path, scheme)
    loaded, _ = load_quantized(tmp_path, device="cuda")
    torch.testing.assert_close(loaded(torch.arange(12, device="cuda")[None]).float(), got)
