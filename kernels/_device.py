"""Where the Triton kernels may run: CUDA tensors, or CPU tensors under the Triton interpreter.

Shared by every kernel file so that all of them fail the same way, with the same message.
"""

from __future__ import annotations

import contextlib
import os

import torch

NO_DEVICE_MESSAGE = "Triton kernels need a CUDA device, or TRITON_INTERPRET=1 to run them on CPU"


def is_interpreter() -> bool:
    """True when TRITON_INTERPRET=1 is set now (kernels then run in numpy, one program at a time).

    Read at call time, so launchers can pick a small fixed config for the interpreter. Note that
    `triton.jit` itself decides interpreted-vs-compiled when a kernel module is *imported*.
    """
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_device(*tensors: torch.Tensor | None) -> None:
    """Raise a clear error unless every tensor given (None is skipped) can feed a Triton kernel.

    CUDA tensors always can; CPU tensors only while TRITON_INTERPRET=1. Tensors on different
    devices are refused too: a kernel launch would otherwise read garbage or crash inside Triton.
    """
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise ValueError(f"Triton kernel inputs must be on one device, got {names}")
    for device in devices:
        if device.type == "cuda":
            continue
        if device.type == "cpu" and is_interpreter():
            continue
        raise RuntimeError(NO_DEVICE_MESSAGE)


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context for launching kernels on `t`'s GPU: Triton launches on the *current* CUDA device,
    which need not be the tensor's (e.g. a tensor on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
