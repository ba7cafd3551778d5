import os

# Kernels must see TRITON_INTERPRET before triton.jit runs (at import), so set it here, first.
# Without CUDA, the Triton kernels run on CPU through the interpreter.
try:
    import torch

    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # `make test` runs two pytest workers on a 2-core machine: one thread each avoids oversubscription,
    # which made tiny-model tests 10-20x slower.
    torch.set_num_threads(1)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if _has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
