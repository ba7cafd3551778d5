"""Run by tests/tasks/test_strategies.py in a subprocess: several `zoo fit` runs, one after another,
in one Python session (the imports are paid once), each exactly as `zoo fit ARGS...` from a shell.

    python strategy_run_helper.py RUNS.json

RUNS.json is a list of argument lists for `zoo.cli.main` (["fit", "-c", ...]). For the 2-process
runs the test starts this script twice with RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR/PORT set,
as torchrun or SLURM would: Lightning then joins those processes instead of launching its own, and
every run of the list uses the same process group.
"""

import inspect
import json
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `zoo`


class RecordLayout(Callback):
    """Writes, from rank 0 when training starts (after `configure_model`), how each parameter of the
    model is laid out: a DTensor's mesh axes, placements and local shape, or a plain tensor's shape."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        from torch.distributed.tensor import DTensor

        layout = {}
        for name, p in pl_module.model.named_parameters():
            if isinstance(p, DTensor):
                layout[name] = {"mesh": list(p.device_mesh.mesh_dim_names or ()),
                                "placements": [_placement(x) for x in p.placements],
                                "local": list(p.to_local().shape), "global": list(p.shape)}
            else:
                layout[name] = {"local": list(p.shape), "global": list(p.shape)}
        own = [inspect.unwrap(vars(m)["forward"]) if "forward" in vars(m) else None for m in _blocks(pl_module.model)]
        layout["_blocks_compiled"] = [hasattr(vars(m).get("forward"), "_torchdynamo_orig_callable")
                                      for m in _blocks(pl_module.model)]
        layout["_blocks_checkpointed"] = [f is not None and f.__name__ == "checkpointed" for f in own]
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(layout))


class SaveWeights(Callback):
    """Saves the full value of every parameter when training starts and ends (gathered from FSDP2 and
    tensor-parallel shards: every rank takes part, rank 0 writes), and how many graphs torch.compile
    compiled in between."""

    def __init__(self, path: str):
        self.path = path

    @staticmethod
    def _full(pl_module) -> dict[str, torch.Tensor]:
        from torch.distributed.tensor import DTensor

        return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().float().cpu().clone()
                for name, p in pl_module.model.named_parameters()}

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.graphs = self._full(pl_module), counters["stats"]["unique_graphs"]

    def on_train_end(self, trainer, pl_module) -> None:
        end = self._full(pl_module)
        if trainer.is_global_zero:
            torch.save({"start": self.start, "end": end}, self.path)
            graphs = counters["stats"]["unique_graphs"] - self.graphs
            Path(self.path).with_suffix(".json").write_text(json.dumps({"compiled_graphs": graphs}))


def _placement(p) -> str:
    return f"Shard({p.dim})" if hasattr(p, "dim") else type(p).__name__  # the same text on every torch


def _blocks(model):
    from zoo.blocks.transformer import TransformerBlock

    return [m for m in model.modules() if isinstance(m, TransformerBlock)]


def main() -> None:
    from zoo.cli import main as zoo

    torch.set_num_threads(1)
    for argv in json.loads(Path(sys.argv[1]).read_text()):
        code = zoo(argv)
        if code:
            print(f"rank {os.environ.get('RANK', 0)}: zoo {' '.join(argv)} exited with {code}", file=sys.stderr)
            sys.exit(code)


if __name__ == "__main__":
    main()
