"""Size checks for the model configs, run from each config dataclass's `__post_init__`.

A config that cannot describe a working model (no layers, heads that do not divide the width, a
window wider than the context) is refused when it is built — that is, when `zoo fit` parses the
YAML — in one line naming the key, its value and the rule, instead of training something broken
(zero blocks, a truncated head width) or failing deep inside a forward pass.
"""

from __future__ import annotations

from typing import Any, Optional

from zoo.errors import ZooError


class ConfigError(ZooError, ValueError):
    """An impossible model size. A ValueError too, so parsers that collect ValueErrors report it."""


def _fail(config: Any, key: str, rule: str) -> None:
    name = type(config).__name__
    value = getattr(config, key)
    raise ConfigError(f"{name}.{key}={value!r}: {rule}; set the model config's `{key}` key")


def check_model_config(
    config: Any,
    positive: tuple[str, ...] = (),
    divides: tuple[tuple[str, str], ...] = (),
    at_most: tuple[tuple[str, str], ...] = (),
    fractions: tuple[str, ...] = ("dropout", "attn_dropout", "activation_dropout"),
) -> None:
    """Raise ConfigError on the first broken rule.

    Args:
        positive: integer keys that must be ≥ 1 when set (None means "the default" and passes).
        divides: (part, whole): `part` must divide `whole` (heads into the width).
        at_most: (key, limit): `key` must not exceed `limit` (a window within the context).
        fractions: probabilities that must lie in [0, 1).
    """
    for key in positive:
        value: Optional[int] = getattr(config, key)
        if value is not None and value < 1:
            _fail(config, key, "must be at least 1")
    for part, whole in divides:
        p, w = getattr(config, part), getattr(config, whole)
        if p is not None and w is not None and w % p:
            _fail(config, part, f"must divide {whole}={w} evenly")
    for key, limit in at_most:
        value, cap = getattr(config, key), getattr(config, limit)
        if value is not None and cap is not None and value > cap:
            _fail(config, key, f"must be at most {limit}={cap}")
    for key in fractions:
        value = getattr(config, key, None)
        if value is not None and not 0.0 <= value < 1.0:
            _fail(config, key, "is a probability: it must lie in [0, 1)")
