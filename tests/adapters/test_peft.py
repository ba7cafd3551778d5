"""PEFT's format, proven by `peft` itself: an adapter made with `peft` on a Hugging Face model loads into
the zoo model converted from it (`zoo.load_peft`) with equal outputs, and a zoo-trained adapter exported
with `zoo export --format peft` loads with `peft.PeftModel.from_pretrained(<base exported with
--format hf --merge false>, DIR)` with the zoo model's outputs (and `--format hf` merges it)."""

import pytest
import torch

import zoo
from tests.adapters.test_lora import randomize_adapters
from tests.interop.helpers import build, tokenizer
from zoo.adapters import LoRAConfig, lora_layers
from zoo.cli import main

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

AUTO = {"gpt": "AutoModelForCausalLM", "llama": "AutoModelForCausalLM", "bert": "AutoModelForMaskedLM",
        "t5": "AutoModelForSeq2SeqLM", "bart": "AutoModelForSeq2SeqLM", "clip": "AutoModel"}
# Hugging Face module names PEFT targets, per family: attention and MLP layers, fused (GPT-2's c_attn) or not
HF_TARGETS = {"gpt": ["c_attn", "mlp.c_proj"], "llama": ["q_proj", "v_proj", "down_proj"],
              "bert": ["query", "value", "output.dense"], "t5": ["q", "v", "wo"], "bart": ["q_proj", "v_proj", "fc1"],
              "clip": ["q_proj", "v_proj", "fc2"]}
LLAMA = dict(position="rope", norm="rmsnorm", gated_mlp=True, activation="silu", bias=False, n_kv_head=2,
             tie_embeddings=False)


def zoo_model(name):
    family = "gpt" if name == "llama" else name
    tok = tokenizer(family)
    return build(family, tok, **(LLAMA if name == "llama" else {})), tok


def both_outputs(name, model, hf):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 150, (2, 9), generator=g)
    with torch.no_grad():
        if name == "clip":
            pixels = torch.randn(2, 3, 16, 16, generator=g)
            return model(pixels, ids).logits_per_image, hf(input_ids=ids, pixel_values=pixels).logits_per_image
        if name in ("t5", "bart"):
            dec = ids[:, :5]
            return model(ids, decoder_input_ids=dec), hf(input_ids=ids, decoder_input_ids=dec).logits
        if name == "bert":
            return model.mlm_logits(model.encode(ids)), hf(input_ids=ids).logits
        return model(ids), hf(input_ids=ids).logits


def hf_base(name, model, tok, directory):
    zoo.to_hf(model, directory, tokenizer=tok)
    return getattr(transformers, AUTO[name]).from_pretrained(directory, attn_implementation="eager").eval()


@pytest.mark.parametrize("name", ["gpt", "llama", "bert", "t5", "bart", "clip"])
def test_adapter_made_with_peft_loads_into_the_zoo_model(tmp_path, name):
    model, tok = zoo_model(name)
    hf = hf_base(name, model, tok, tmp_path / "base")
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=HF_TARGETS[name], use_rslora=name == "bert",
                             fan_in_fan_out=name == "gpt")
    peft_model = peft.get_peft_model(hf, config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.eval()

    loaded = zoo.load_peft(zoo.from_hf(tmp_path / "base"), tmp_path / "adapter")
    adapted = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    fused = sum(n.endswith("c_attn.lora_A") for n in adapted)  # one GPT-2 c_attn: the zoo's q, k and v
    assert len(lora_layers(loaded)) == len(adapted) + 2 * fused
    ours, theirs = both_outputs(name, loaded.eval(), peft_model)
    plain, _ = both_outputs(name, model, hf.get_base_model() if hasattr(hf, "get_base_model") else hf)
    assert (theirs - plain).abs().max() > 1e-2  # the adapter changes the outputs
    assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["gpt", "llama", "bert", "t5", "bart", "clip"])
def test_zoo_adapter_exported_in_peft_format_loads_in_peft(tmp_path, name):
    from zoo.tasks import CausalLM, Contrastive, MaskedLM, Seq2SeqLM

    model, tok = zoo_model(name)
    task_class = {"gpt": CausalLM, "llama": CausalLM, "bert": MaskedLM, "t5": Seq2SeqLM, "bart": Seq2SeqLM,
                  "clip": Contrastive}[name]
    task = task_class(model, lora=LoRAConfig(r=4, alpha=8, targets="all-linear"))
    task.configure_model()
    randomize_adapters(task.model)
    ckpt = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    ckpt["zoo"]["tokenizer"] = tok.to_str()
    torch.save(ckpt, tmp_path / "lora.ckpt")

    assert main(["export", "--model", str(tmp_path / "lora.ckpt"), "--out", str(tmp_path / "adapter"),
                 "--format", "peft"]) == 0
    assert main(["export", "--model", str(tmp_path / "lora.ckpt"), "--out", str(tmp_path / "base"),
                 "--format", "hf", "--merge", "false"]) == 0
    assert main(["export", "--model", str(tmp_path / "lora.ckpt"), "--out", str(tmp_path / "merged")]) == 0
    base = getattr(transformers, AUTO[name]).from_pretrained(tmp_path / "base", attn_implementation="eager").eval()
    plain = both_outputs(name, model, base)[1]
    adapted = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ours, theirs = both_outputs(name, task.model.eval(), adapted)
    assert (theirs - plain).abs().max() > 1e-2  # the adapter is there and acts
    assert (ours - theirs).abs().max() <= 1e-4
    merged = getattr(transformers, AUTO[name]).from_pretrained(tmp_path / "merged", attn_implementation="eager").eval()
    assert (both_outputs(name, task.model, merged)[1] - ours).abs().max() <= 1e-4
