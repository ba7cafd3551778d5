"""Evaluation tests run offline: the harness reads only the local tasks (generated into a session folder)
and the Hugging Face exports written here. Checkpoints come from the 2-step `zoo fit` runs of
tests/interop (one per family, at most once per session)."""

from __future__ import annotations

import os

import pytest

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.interop.conftest import fitted  # noqa: E402,F401  (the session fixture: fitted(name) -> last.ckpt)


@pytest.fixture(scope="session")
def task_cache(tmp_path_factory):
    """The offline harness tasks, written once per session."""
    from zoo.evaluation.local_tasks import write_local_tasks

    root = tmp_path_factory.mktemp("eval-tasks")
    write_local_tasks(root)
    return root
