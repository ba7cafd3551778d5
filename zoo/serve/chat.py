"""Chat prompts: the model's own chat template when it has one, else a plain default.

Where the template comes from, first found:

- a zoo `.ckpt` that `zoo.tasks.InstructionTuning` wrote: the template it was trained with
  (checkpoint["zoo"]["chat_template"], e.g. the default `<|user|>\\n...<|end|>\\n<|assistant|>\\n`);
- a folder `zoo quantize` wrote: the same template, carried into its `zoo.json` ("chat_template");
- a Hugging Face directory: the `chat_template` of its `tokenizer_config.json`.

`saved_template` finds it (`zoo quantize` and `zoo export` read it there too).

Either is rendered by `zoo.data.chat_template.ChatTemplate` (Jinja's sandbox, as `transformers`
does), and generation stops at the template's end-of-turn marker (`<|end|>` for the zoo's default),
added to the request's stop strings.

Without one (zoo-trained language models, not chat-tuned) the plain default writes each message as
"Role: content" on its own line and ends with "Assistant:"; generation then stops at "\\nUser:"
or "\\nSystem:", so the model answers one turn:

    System: You are terse.
    User: Name a colour.
    Assistant:
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from zoo.data.chat_template import ChatTemplate as Template

PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}Assistant:{% endif %}")
PLAIN_STOP = ("\nUser:", "\nSystem:")


class ChatTemplate:
    """A template and the stop strings that end an answer. `template` None: the plain default."""

    def __init__(self, template: Optional[Template] = None, stop: Optional[Sequence[str]] = None):
        self.is_default = template is None
        self.template = template or Template(PLAIN_TEMPLATE, special_tokens=())
        self.stop = tuple(s for s in (stop if stop is not None else
                                      PLAIN_STOP if self.is_default else self.template.stop) if s)

    def render(self, messages: list[dict]) -> str:
        """The prompt of a chat request: the messages and the assistant's generation prompt."""
        return self.template.render(messages, add_generation_prompt=True)

    @classmethod
    def for_model(cls, source: str, checkpoint: Optional[dict[str, Any]] = None) -> "ChatTemplate":
        """The template `saved_template(source, checkpoint)` finds, with its stop strings; else the default."""
        meta = saved_template(source, checkpoint)
        if meta is None:
            return cls()
        stop = meta.get("stop") if isinstance(meta, dict) else None
        return cls(Template.from_meta(meta), stop)


def saved_template(source: str, checkpoint: Optional[dict[str, Any]] = None) -> Optional[dict[str, Any] | str]:
    """The chat template a model carries, as `Template.to_meta` writes it ({source, bos_token, eos_token,
    stop}; a bare Jinja string from older checkpoints), or None: from a zoo checkpoint (pass it as
    `checkpoint` if already read, else a `.ckpt` `source` is read), a `zoo quantize` folder's zoo.json,
    or `source/tokenizer_config.json` (a Hugging Face directory)."""
    from zoo.checkpoint import is_checkpoint, read_checkpoint
    from zoo.compress.quantize import saved_meta

    if checkpoint is None and is_checkpoint(source):
        checkpoint = read_checkpoint(source)
    if checkpoint is not None:
        return (checkpoint.get("zoo") or {}).get("chat_template") or None
    quantized = saved_meta(source)
    if quantized is not None:
        return quantized.get("chat_template") or None
    found = Template.from_tokenizer_config(source) if Path(source).is_dir() else None
    return found.to_meta() if found is not None else None
