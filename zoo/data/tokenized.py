"""``TokenizerMixin``: the tokenizer half of every data module, written once.

A data module names where its tokenizer comes from (``tokenizer_file``: a tokenizer.json, a
folder holding one, or a zoo .ckpt carrying one) or, with none named, builds one itself
(``build_tokenizer``: trained on the training split, read from prepared shards, ...). Either
way the tokenizer is made once, lazily, on first use of ``tokenizer`` or ``model_vocab_size``
(the CLI reads the latter to size the model before training starts), and checked for an
end-of-text token then, so a tokenizer that cannot end a document fails with the fix at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lightning.pytorch.utilities import rank_zero_info
from tokenizers import Tokenizer

from zoo.data.tokenizer import eos_token_id, load_tokenizer, pad_token_id, tokenizer_json_path
from zoo.errors import ZooError


class TokenizerMixin:
    """``tokenizer``, ``model_vocab_size``, ``eos_token_id``, ``pad_token_id`` for a data module.

    Subclasses set ``tokenizer_file`` (None to build one) and implement ``build_tokenizer``;
    ``tokenizer_name`` names the tokenizer in the one log line written when it is ready.
    """

    tokenizer_file: Optional[str] = None
    tokenizer_name = "tokenizer"
    _tokenizer: Optional[Tokenizer] = None
    _tokenizer_path: Optional[Path] = None

    def build_tokenizer(self) -> tuple[Tokenizer, Optional[Path]]:
        """The tokenizer to use when ``tokenizer_file`` is unset, and the file it lives in (None if none)."""
        raise NotImplementedError

    @property
    def tokenizer(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer``: loaded from ``tokenizer_file``, else built by ``build_tokenizer``."""
        if self._tokenizer is None:
            if self.tokenizer_file is not None:
                tok, path = load_tokenizer(self.tokenizer_file), tokenizer_json_path(self.tokenizer_file)
            else:
                tok, path = self.build_tokenizer()
            eos_token_id(tok)  # fail now, with the fix, rather than mid-tokenization
            self._tokenizer, self._tokenizer_path = tok, path
            where = f", {path}" if path is not None else ""
            rank_zero_info(f"{self.tokenizer_name}: {tok.get_vocab_size()} tokens{where}")
        return self._tokenizer

    @property
    def tokenizer_path(self) -> Optional[str]:
        """The file the tokenizer was read from (the cache when it was trained there); None if only in memory."""
        _ = self.tokenizer  # loads or builds it, which sets the path
        return None if self._tokenizer_path is None else str(self._tokenizer_path)

    @property
    def model_vocab_size(self) -> int:
        """The tokenizer's actual vocabulary size (loads or builds it): the model's ``vocab_size``."""
        return self.tokenizer.get_vocab_size()

    @property
    def eos_token_id(self) -> int:
        """The end-of-text id: separates packed documents, ends captions and text-to-text targets."""
        return eos_token_id(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        """The padding id (the end-of-text id when the tokenizer has no pad token)."""
        return pad_token_id(self.tokenizer)

    def required_token_id(self, token: str) -> int:
        """The id of a special token this data module needs; a ZooError naming the fix if it is missing."""
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ZooError(
                f"the tokenizer has no {token!r} token, which {type(self).__name__} needs; "
                f"add it to --data.special_tokens or use a tokenizer that has it"
            )
        return token_id
