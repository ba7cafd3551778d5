"""Chat prompts: the Jinja chat template of the checkpoint's `tokenizer_config.json` when it has one
(rendered in Jinja's sandbox, as `transformers` does), else the zoo's default template.

The default, for zoo-trained models (plain language models, not chat-tuned), writes each message as
"Role: content" on its own line and ends with "Assistant:"; generation then stops at "\\nUser:"
or "\\nSystem:" (added to the request's stop strings), so the model answers one turn:

    System: You are terse.
    User: Name a colour.
    Assistant:
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

DEFAULT_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}Assistant:{% endif %}")
DEFAULT_STOP = ("\nUser:", "\nSystem:")


class ChatTemplate:
    def __init__(self, source: Optional[str] = None, bos_token: str = "", eos_token: str = ""):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.is_default = source is None
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) if source else \
            ImmutableSandboxedEnvironment()
        self.template = env.from_string(source or DEFAULT_TEMPLATE)
        self.bos_token, self.eos_token = bos_token, eos_token
        self.stop = DEFAULT_STOP if self.is_default else ()

    def render(self, messages: list[dict]) -> str:
        return self.template.render(messages=messages, add_generation_prompt=True, bos_token=self.bos_token,
                                    eos_token=self.eos_token)

    @classmethod
    def for_model(cls, source: str) -> "ChatTemplate":
        """The template in `source/tokenizer_config.json` (a Hugging Face directory), else the default."""
        path = Path(source) / "tokenizer_config.json"
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            template = config.get("chat_template")
            if isinstance(template, list):  # named templates: take "default"
                template = next((t["template"] for t in template if t.get("name") == "default"), None)
            if template:
                token = lambda key: (config.get(key) or {}).get("content", "") if isinstance(config.get(key), dict) \
                    else (config.get(key) or "")  # noqa: E731
                return cls(template, token("bos_token"), token("eos_token"))
        return cls()
