"""LoRA under DDP, FSDP2 and tensor parallel on 2 CPU processes (gloo) trains like one process: the
harness of tests/tasks/test_strategies.py, one reference fit and one 2-process session of 3 fits of a
BERT classifier with adapters on every block's linear layers. Also: under tensor parallel each adapter is
sharded to match its base layer (column-parallel: A replicated, B split by rows; row-parallel: A split by
columns, B replicated)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.tasks.test_strategies import BATCH, B, finish, fit_args, start, val_losses

pytestmark = pytest.mark.slow
NAME = "bert-cls-lora"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-strategies")
    single = [fit_args(NAME, "cpu", f"{NAME}-single", tmp, 2 * B)]
    finish(start(single, tmp, "single"), tmp, "single")  # first: it trains the tokenizer the others read
    multi = [fit_args(NAME, f"cpu-{s}", f"{NAME}-{s}", tmp, BATCH[s]) for s in BATCH]
    finish(start(multi, tmp, "multi", world=2), tmp, "multi")
    names = [Path(argv[-1]).parent.name for argv in single + multi]
    return SimpleNamespace(
        loss={n: val_losses(tmp, n) for n in names},
        layout={n: json.loads((tmp / n / "layout.json").read_text()) for n in names},
        weights=lambda n: torch.load(tmp / n / "weights.pt", weights_only=True),
    )


def test_lora_under_ddp_fsdp_and_tensor_parallel_trains_like_one_process(runs):
    """The validation losses after each step and every parameter after the last equal one process's; only
    the adapters moved (clipped SGD moves them ~5e-3: 500× the tolerance)."""
    single = runs.weights(f"{NAME}-single")
    start, want = single["start"], single["end"]
    adapters = [n for n in want if ".lora_" in n]
    assert len(adapters) == 2 * 6 * 2  # A and B of q, k, v, o, up, down in 2 blocks
    assert all(torch.equal(start[n], want[n]) for n in want if n not in adapters)
    assert max((want[n] - start[n]).abs().max() for n in adapters) > 1e-3
    failures = []
    for strategy in BATCH:
        got = runs.weights(f"{NAME}-{strategy}")["end"]
        loss, ref = runs.loss[f"{NAME}-{strategy}"], runs.loss[f"{NAME}-single"]
        if len(loss) != len(ref) or max(abs(a - b) for a, b in zip(loss, ref)) > 1e-4:
            failures.append(f"{strategy}: losses {loss} vs {ref}")
        worst = max(want, key=lambda n: (got[n] - want[n]).abs().max())
        if sorted(got) != sorted(want) or (got[worst] - want[worst]).abs().max() > 1e-5:
            failures.append(f"{strategy}: {worst} differs by {(got[worst] - want[worst]).abs().max():.2e}")
    assert not failures, "\n".join(failures)


def test_adapters_are_sharded_like_their_base_layers(runs):
    tp = runs.layout[f"{NAME}-tp"]
    q = next(n for n in tp if n.endswith("self_attn.q_proj.lora_A.weight"))
    attn = q.removesuffix("q_proj.lora_A.weight")
    down = attn.replace("self_attn.", "mlp.down_proj.")
    assert tp[attn + "q_proj.base_layer.weight"]["placements"][-1] == "Shard(0)"
    assert "tensor_parallel" not in tp[q]["mesh"] and tp[q]["global"] == [4, 32]  # A of a column-parallel layer
    assert tp[attn + "q_proj.lora_B.weight"]["placements"][-1] == "Shard(0)"
    assert tp[attn + "q_proj.lora_B.weight"]["local"] == [16, 4]
    assert tp[attn + "o_proj.lora_A.weight"]["placements"][-1] == "Shard(1)"  # A of a row-parallel layer
    assert tp[attn + "o_proj.lora_A.weight"]["local"] == [4, 16]
    assert "tensor_parallel" not in tp[attn + "o_proj.lora_B.weight"]["mesh"]
    assert tp[down + "lora_A.weight"]["placements"][-1] == "Shard(1)"
