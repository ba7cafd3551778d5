"""Chat templates for instruction tuning: messages → one string, rendered as `transformers` does.

A template is Jinja (the `chat_template` of a Hugging Face `tokenizer_config.json`), rendered in
Jinja's immutable sandbox with `trim_blocks` and `lstrip_blocks`, the loop-controls extension and a
`raise_exception` global, given `messages`, `add_generation_prompt`, `bos_token` and `eos_token` —
the environment of `PreTrainedTokenizerBase.apply_chat_template`, so the same template gives the
same string here and there (tested).

Without a template the zoo's default is used. Its role markers are special tokens, added to the
tokenizer (`DEFAULT_SPECIAL_TOKENS`), so they never collide with text and each is one id:

    <|system|>\\nYou are terse.<|end|>\\n<|user|>\\nName a colour.<|end|>\\n<|assistant|>\\nBlue.<|end|>\\n

`response_spans` splits a conversation into prompt and response pieces (the loss is counted on the
responses only): a response is what rendering message i adds to the rendering of messages[:i]
with the generation prompt, so it runs from the assistant's content through its end-of-turn marker.
That marker (`<|end|>` for the default) is the template's `stop`: where generation from the
template's prompt ends. The instruction-tuning task saves the template in the checkpoint
(`to_meta`, under checkpoint["zoo"]["chat_template"]); `zoo serve` and `zoo export` read it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from zoo.errors import ZooError

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
DEFAULT_SPECIAL_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
DEFAULT_STOP = "<|end|>"
ROLES = ("system", "user", "assistant")


def _raise(message: str):
    raise ZooError(f"the chat template refused the messages: {message}")


@dataclass
class ChatTemplate:
    """A Jinja chat template with the special tokens it names.

    Args:
        source: the Jinja text (default: the zoo's template).
        bos_token, eos_token: strings the template may use, as in `tokenizer_config.json`.
        special_tokens: tokens to add to the tokenizer (the default template's role markers).
    """

    source: str = DEFAULT_CHAT_TEMPLATE
    bos_token: str = ""
    eos_token: str = ""
    special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS
    _compiled: object = field(default=None, repr=False, compare=False)

    @property
    def is_default(self) -> bool:
        return self.source == DEFAULT_CHAT_TEMPLATE

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        if self._compiled is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.globals["raise_exception"] = _raise
            self._compiled = env.from_string(self.source)
        return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token, eos_token=self.eos_token)

    def response_spans(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """(text, is_response) pieces whose concatenation is `render(messages)`; responses are assistant turns."""
        full = self.render(messages)
        pieces, done = [], 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            after = self.render(messages[: i + 1])
            if not (after.startswith(before) and full.startswith(after) and len(before) >= done):
                raise ZooError("the chat template does not render a conversation as a prefix of its continuation, "
                               "so responses cannot be located; use a template that appends each message")
            pieces += [(full[done:len(before)], False), (full[len(before):len(after)], True)]
            done = len(after)
        pieces.append((full[done:], False))
        return [(text, is_response) for text, is_response in pieces if text]

    @property
    def stop(self) -> tuple[str, ...]:
        """Where an answer ends: the text the template writes after an assistant's content (its
        end-of-turn marker, whitespace stripped), else its eos token; () if it writes neither."""
        if self.is_default:
            return (DEFAULT_STOP,)
        mark = "\x00answer\x00"
        try:
            spans = self.response_spans([{"role": "user", "content": "question"},
                                         {"role": "assistant", "content": mark}])
        except Exception:  # a template that refuses this conversation (say, one that requires a system turn)
            spans = []
        after = next((t.split(mark, 1)[1].strip() for t, is_response in spans if is_response and mark in t), "")
        return (after,) if after else (self.eos_token,) if self.eos_token else ()

    def to_meta(self) -> dict[str, Any]:
        """What a checkpoint stores (checkpoint["zoo"]["chat_template"]); `from_meta` reads it back."""
        return {"source": self.source, "bos_token": self.bos_token, "eos_token": self.eos_token,
                "stop": list(self.stop)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | str) -> "ChatTemplate":
        """The template a checkpoint stored (`to_meta`; a bare Jinja string is taken as the source).
        Its special tokens are already in the checkpoint's tokenizer, so none are listed."""
        if isinstance(meta, str):
            return cls(meta, special_tokens=())
        return cls(meta["source"], meta.get("bos_token") or "", meta.get("eos_token") or "", special_tokens=())

    @classmethod
    def from_tokenizer_config(cls, path: str | Path) -> Optional["ChatTemplate"]:
        """The template of a `tokenizer_config.json` (or a folder holding one, where recent `transformers`
        writes it to `chat_template.jinja` beside it); None if there is none."""
        path = Path(path)
        path = path / "tokenizer_config.json" if path.is_dir() else path
        if path.name != "tokenizer_config.json" or not path.is_file():
            return None
        config = json.loads(path.read_text(encoding="utf-8"))
        template = config.get("chat_template")
        if not template and (path.parent / "chat_template.jinja").is_file():
            template = (path.parent / "chat_template.jinja").read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: the "default" one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if not template:
            return None

        def token(key: str) -> str:
            value = config.get(key) or ""
            return value.get("content", "") if isinstance(value, dict) else value

        return cls(template, token("bos_token"), token("eos_token"), special_tokens=())


def check_messages(messages, where: str) -> list[dict]:
    """A chat record's messages as [{"role", "content"}], or a ZooError naming `where` and the fix."""
    if not isinstance(messages, list) or not messages:
        raise ZooError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ZooError(f"{where}: each message needs a role among {', '.join(ROLES)} and a string content, "
                           f"got {str(m)[:80]}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ZooError(f"{where}: the conversation has no assistant message, so nothing to learn from")
    return out
