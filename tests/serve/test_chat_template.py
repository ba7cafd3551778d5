"""An instruction-tuned checkpoint keeps its chat template: a tiny `InstructionTuning` run saves it
(checkpoint["zoo"]["chat_template"]), `zoo serve` prompts the model with it (`<|user|>` markers, the
rendered prompt read back from the content log) and stops at its `<|end|>`, `zoo export --format hf`
writes it to tokenizer_config.json so that transformers' `apply_chat_template` gives the same string
and lists `<|end|>` among generation_config's eos ids so that `generate` stops there, `zoo quantize` carries
it into the folder's zoo.json, and a checkpoint without one is still served with the plain
"User: ... Assistant:" default."""

import json

import lightning as L
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from tests.serve.conftest import Running, gpt_classifier_checkpoint
from zoo.data.chat_template import DEFAULT_STOP, ChatTemplate
from zoo.data.instructions import InstructionDataModule
from zoo.models import GPT, GPTConfig
from zoo.serve.chat import PLAIN_STOP
from zoo.serve.model import ServedModel
from zoo.tasks.instruction import InstructionTuning

WORDS = "name a colour another blue red what is it the".split()
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a colour"}]


def sft_checkpoint(root):
    """A checkpoint as `zoo fit -c configs/gpt/sft.yaml` writes one: two steps of a tiny GPT on a word
    tokenizer, the default template's special tokens added by the data module."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "<|endoftext|>", *WORDS])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(root / "tokenizer.json"))
    rows = [{"prompt": "name a colour", "response": "blue"}, {"prompt": "another", "response": "red"}] * 4
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = InstructionDataModule(sources=[str(root / "sft.jsonl")], tokenizer=str(root / "tokenizer.json"),
                               block_size=32, batch_size=2, val_fraction=0.5)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=dm.tokenizer.get_vocab_size(), max_seq_len=64, d_model=16, n_layer=1, n_head=2))
    task = InstructionTuning(model, sample_question="", warmup_steps=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(root / "sft.ckpt")
    return root / "sft.ckpt", dm


def always_says(ckpt_path, token_id: int) -> None:
    """Rewrite the checkpoint's weights so that the model predicts `token_id` after any prompt: the
    final norm outputs a constant unit vector e0 that only that token's (tied) embedding row matches."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    state = ckpt["state_dict"]
    state["model.decoder.norm.weight"].zero_()
    state["model.decoder.norm.bias"].zero_()
    state["model.decoder.norm.bias"][0] = 1.0
    for key in ("model.embed_tokens.weight", "model.lm_head.weight"):
        state[key][:, 0] = 0.0
        state[key][token_id, 0] = 50.0
    torch.save(ckpt, ckpt_path)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    ckpt, dm = sft_checkpoint(root)
    return ckpt, dm.chat_template, dm.tokenizer


def test_instruction_tuning_saves_its_chat_template(sft):
    ckpt, template, _ = sft
    saved = torch.load(ckpt, weights_only=True)["zoo"]["chat_template"]
    assert saved == {"source": template.source, "bos_token": "", "eos_token": "", "stop": [DEFAULT_STOP]}
    assert template.is_default and ChatTemplate.from_meta(saved).render(MESSAGES, True) == template.render(MESSAGES, True)


def test_served_sft_checkpoint_is_prompted_with_its_template_and_stops_at_end(sft, tmp_path):
    from zoo.serve import create_app

    ckpt, template, tokenizer = sft
    end = tokenizer.token_to_id(DEFAULT_STOP)
    ckpt_copy = tmp_path / "says-end.ckpt"
    ckpt_copy.write_bytes(ckpt.read_bytes())
    always_says(ckpt_copy, end)
    served = ServedModel(str(ckpt_copy))
    assert served.chat.render(MESSAGES) == "<|system|>\nbe brief<|end|>\n<|user|>\nname a colour<|end|>\n<|assistant|>\n"
    assert served.chat.render(MESSAGES) == template.render(MESSAGES, add_generation_prompt=True)
    assert served.chat.stop == (DEFAULT_STOP,)

    app = create_app(str(ckpt_copy), model_name="sft", log_file=str(tmp_path / "requests.jsonl"), log_content=True,
                     feedback_file=str(tmp_path / "feedback.jsonl"), wait_ms=1)
    running = Running(app)
    try:
        client = running.client()
        chat = client.chat.completions.create(model="sft", messages=MESSAGES, max_tokens=8, temperature=0)
        # the model's first token is <|end|>: the template's stop ends the answer there (a special token,
        # dropped from the text), where a plain completion of the same prompt runs to max_tokens
        assert chat.choices[0].finish_reason == "stop" and chat.choices[0].message.content == ""
        assert chat.usage.completion_tokens == 1
        plain = client.completions.create(model="sft", prompt=served.chat.render(MESSAGES), max_tokens=8, temperature=0)
        assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 8
    finally:
        running.stop()
    logged = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    chat_line = next(r for r in logged if r["endpoint"] == "/v1/chat/completions")
    assert chat_line["prompt"] == served.chat.render(MESSAGES) and "<|user|>\nname a colour<|end|>" in chat_line["prompt"]


def test_hf_export_carries_the_template_for_apply_chat_template(sft, tmp_path):
    transformers = pytest.importorskip("transformers")
    from zoo.interop.export import export

    ckpt, template, _ = sft
    out = tmp_path / "hf"
    export(str(ckpt), str(out), format="hf")
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template.source
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    for generation in (True, False):
        chat = MESSAGES if generation else [*MESSAGES, {"role": "assistant", "content": "blue"}]
        expected = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation)
        assert template.render(chat, add_generation_prompt=generation) == expected
    assert hf.convert_tokens_to_ids("<|end|>") == template_id(out, "<|end|>")  # the role markers travel as tokens
    served = ServedModel(str(out))  # and `zoo serve` of the export reads the template back
    assert served.chat.render(MESSAGES) == template.render(MESSAGES, True) and served.chat.stop == (DEFAULT_STOP,)


def test_hf_export_generation_stops_at_the_templates_end(sft, tmp_path):
    transformers = pytest.importorskip("transformers")
    from zoo.interop.export import export

    ckpt, _, tokenizer = sft
    end, eos = tokenizer.token_to_id(DEFAULT_STOP), tokenizer.token_to_id("<|endoftext|>")
    says_end = tmp_path / "says-end.ckpt"
    says_end.write_bytes(ckpt.read_bytes())
    always_says(says_end, end)
    export(str(says_end), str(tmp_path / "hf"), format="hf")
    config = transformers.GenerationConfig.from_pretrained(str(tmp_path / "hf"))
    assert config.eos_token_id == [eos, end]  # the tokenizer's eos first, then the template's end of turn
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    prompt = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf")).apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8)
    assert out[0, prompt["input_ids"].shape[1]:].tolist() == [end]  # stopped at <|end|>, not at max_new_tokens


def test_quantized_sft_folder_keeps_its_template(sft, tmp_path):
    pytest.importorskip("torchao")
    from zoo.compress.commands import quantize
    from zoo.serve.chat import saved_template

    ckpt, template, _ = sft
    saved = torch.load(ckpt, weights_only=True)["zoo"]["chat_template"]
    folder = quantize(str(ckpt), str(tmp_path / "q"), scheme="int8-weight")
    assert json.loads((tmp_path / "q" / "zoo.json").read_text())["chat_template"] == saved
    assert saved_template(folder) == saved
    for served in (ServedModel(folder), ServedModel(str(ckpt), quantize="int8-weight")):  # and `serve --quantize`
        assert served.quantization == "int8-weight"
        assert served.chat.render(MESSAGES) == template.render(MESSAGES, True) and "<|user|>" in served.chat.render(MESSAGES)
        assert not served.chat.is_default and served.chat.stop == (DEFAULT_STOP,)


def template_id(out, token):
    return Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id(token)


def test_plain_checkpoint_keeps_the_plain_default(sft, tmp_path):
    from zoo.interop.export import export

    # a language model's checkpoint (no chat template inside): the SFT one without it, and a classifier's
    ckpt = torch.load(sft[0], weights_only=True)
    del ckpt["zoo"]["chat_template"]
    torch.save(ckpt, tmp_path / "plain.ckpt")
    for path in (tmp_path / "plain.ckpt", gpt_classifier_checkpoint(tmp_path / "classifier.ckpt")):
        served = ServedModel(str(path))
        assert served.chat.is_default and served.chat.stop == PLAIN_STOP
        assert served.chat.render(MESSAGES) == "System: be brief\nUser: name a colour\nAssistant:"
    assert served.classifier is not None  # the head, from the same reading of the checkpoint
    export(str(tmp_path / "plain.ckpt"), str(tmp_path / "hf"), format="hf")
    assert "chat_template" not in json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == sft[2].token_to_id("<|endoftext|>")  # one id, as before: no template
