"""Backend selection for the `impl` switch shared by attention and norms.

`impl="triton"` runs our kernels (package `kernels`) on CUDA tensors, and on CPU tensors when
`TRITON_INTERPRET=1` (the tests). Anywhere else it falls back to the torch implementation with a
single warning per reason, so a config written for a GPU still runs on a laptop.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import torch

AttnImpl = Literal["eager", "torch", "triton"]
NormImpl = Literal["torch", "triton"]

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Emit `message` as a UserWarning the first time it is seen in this process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def triton_usable(x: torch.Tensor) -> bool:
    """True when the Triton kernels can run on `x` (CUDA, or CPU under TRITON_INTERPRET=1)."""
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        warn_once("impl='triton' needs a CUDA device (or TRITON_INTERPRET=1 on CPU); using torch instead")
        return False
    try:
        import kernels  # noqa: F401
    except Exception as err:  # triton missing or kernels not importable on this platform
        warn_once(f"impl='triton' unavailable ({err}); using torch instead")
        return False
    return True
