"""InstructionDataModule: both record shapes and the serve feedback file, the chat template as
`transformers` renders it, response-only labels, packing with restarting positions."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from zoo.data.chat_template import DEFAULT_CHAT_TEMPLATE, DEFAULT_SPECIAL_TOKENS, ChatTemplate
from zoo.data.instructions import InstructionDataModule, pydoc_instructions
from zoo.errors import ZooError

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# whitespace control, loop controls and bos/eos, as real templates use them
LLAMA_LIKE = """{{ bos_token }}{% for message in messages %}
  {% if message['role'] == 'system' %}{% continue %}{% endif %}
  {% if message['role'] == 'user' %}[INST] {{ message['content'] | trim }} [/INST]{% else %} {{ message['content'] }}{{ eos_token }}{% endif %}
{% endfor %}"""
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour. "},
        {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Red."}]


def word_tokenizer(path):
    words = "name a colour another blue red be brief what is it the".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "<|endoftext|>", *words])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return str(path)


@pytest.mark.parametrize("template", [DEFAULT_CHAT_TEMPLATE, CHATML, LLAMA_LIKE], ids=["default", "chatml", "llama-like"])
@pytest.mark.parametrize("generation", [False, True])
def test_template_renders_as_hugging_face(tmp_path, template, generation):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=word_tokenizer(tmp_path / "t.json"), bos_token="<s>",
                                              eos_token="</s>", chat_template=template)
    expected = hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=generation)
    assert ChatTemplate(template, "<s>", "</s>").render(CHAT, add_generation_prompt=generation) == expected
    # and read from the tokenizer_config.json that save_pretrained writes
    hf.save_pretrained(tmp_path / "hf")
    assert ChatTemplate.from_tokenizer_config(tmp_path / "hf").render(CHAT, generation) == expected


def test_response_spans_cover_assistant_turns_only():
    spans = ChatTemplate().response_spans(CHAT)
    assert "".join(t for t, _ in spans) == ChatTemplate().render(CHAT)
    assert [t for t, r in spans if r] == ["Blue.<|end|>\n", "Red.<|end|>\n"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_reads_both_record_shapes_and_the_feedback_file(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"what is {w}", "response": f"it is {w}"} for w in "abcdefgh"])
    chats = write_jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}] * 3)
    # what zoo serve's POST /v1/feedback appends (zoo.serve.monitor.Feedback)
    from zoo.serve.monitor import Feedback

    fb = Feedback(str(tmp_path / "feedback.jsonl"))
    fb.remember("r1", "name a colour", "green")
    fb.add("r1", 1, "blue")
    dm = InstructionDataModule(sources=[prompts, chats, str(tmp_path / "feedback.jsonl")],
                               tokenizer=word_tokenizer(tmp_path / "w.json"), block_size=64, batch_size=2, val_fraction=0.3)
    records = dm.records("train") + dm.records("val")
    assert len(records) == 8 + 3 + 1 and dm.records("val")
    assert {"role": "assistant", "content": "blue"} in [m for r in records for m in r.messages]
    assert sum(r.messages == CHAT for r in records) == 3
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "position_ids", "segment_ids"} and batch["input_ids"].shape[1] == 64
    assert dm.tokenizer.token_to_id("<|assistant|>") is not None  # the default template's tokens were added


def test_labels_are_next_response_tokens_and_positions_restart(tmp_path):
    dm = InstructionDataModule(sources=[write_jsonl(tmp_path / "p.jsonl", [{"prompt": "name a colour", "response": "blue red"},
                                                                          {"prompt": "another", "response": "red"}] * 3)],
                               tokenizer=word_tokenizer(tmp_path / "w.json"), block_size=40, val_fraction=0.5)
    block = dm.blocks("train")[0]
    tok = dm.tokenizer
    for s in range(int(block["segment_ids"].max())):
        where = (block["segment_ids"] == s).nonzero().flatten()
        if len(where) == 0:
            continue
        assert torch.equal(block["position_ids"][where], torch.arange(len(where)))
        labels = [t for t in block["labels"][where].tolist() if t != -100]
        text = tok.decode(labels, skip_special_tokens=False)
        assert "<|user|>" not in text and "colour" not in text and "another" not in text  # prompt tokens: -100
        assert text.replace(" ", "").rstrip("\n") in ("blue red<|end|>".replace(" ", ""), "red<|end|>")


def test_embedded_set_and_errors(tmp_path):
    records = pydoc_instructions()
    assert len(records) > 200 and len({r.group for r in records}) > 70
    assert records[0].messages[0]["content"].startswith("What does the Python documentation say about")
    assert not any("***" in r.messages[1]["content"] for r in records)  # titles are not answers
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "response": "y"}\n{"text": "no"}\n')
    with pytest.raises(ZooError, match="bad.jsonl:2"):
        InstructionDataModule(sources=[str(bad)]).records()
    bad.write_text('{"prompt": "x", "response": "y"}\nnot json\n')
    with pytest.raises(ZooError, match="bad.jsonl:2: not valid JSON"):
        InstructionDataModule(sources=[str(bad)]).records()
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ZooError, match="no assistant message"):
        InstructionDataModule(sources=[str(bad)]).records()
    assert set(DEFAULT_SPECIAL_TOKENS) == {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"}
