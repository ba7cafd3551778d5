"""Backend selection for the `impl` switch shared by attention and norms.

`impl="triton"` runs our kernels (package `kernels`) on CUDA tensors, and on CPU tensors when
`TRITON_INTERPRET=1` (the tests). Anywhere else it falls back to the torch implementation, and
every fallback is logged once per reason (logger "zoo"), naming why, so a config written for a
GPU still runs on a laptop and the user knows what ran.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import torch

AttnImpl = Literal["eager", "torch", "triton"]
NormImpl = Literal["torch", "triton"]

log = logging.getLogger("zoo")
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log `message` as a warning on the "zoo" logger the first time it is seen in this process."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def triton_available() -> bool:
    """True when the `kernels` package imports (triton installed); else logs why, once."""
    try:
        import kernels  # noqa: F401
    except Exception as err:  # triton missing or kernels not importable on this platform
        warn_once(f"impl 'triton' falls back to 'torch': the Triton kernels are unavailable here ({err})")
        return False
    return True


def triton_usable(x: torch.Tensor) -> bool:
    """True when the Triton kernels can run on `x` (CUDA, or CPU under TRITON_INTERPRET=1)."""
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        warn_once(f"impl 'triton' falls back to 'torch': tensors on {x.device.type} need a CUDA device "
                  "(or TRITON_INTERPRET=1 to run the kernels in the interpreter)")
        return False
    return triton_available()
