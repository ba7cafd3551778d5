"""Training strategies beyond Lightning's defaults.

`ModelParallel` is Lightning's `ModelParallelStrategy` (FSDP2 and tensor parallel on a 2-D device
mesh, with the parallelism itself applied by `zoo.parallel` in the task's `configure_model`) with
sizes that need no editing per machine: tensor parallel defaults to 1 (FSDP2 only) and the
data-parallel size to every remaining process, `world_size / tensor_parallel_size`.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from lightning.pytorch.strategies import ModelParallelStrategy

from zoo.errors import ZooError


class ModelParallel(ModelParallelStrategy):
    """FSDP2 over the data-parallel axis, tensor parallel over the other.

    Args:
        data_parallel_size: ranks that each hold a different shard of the batch and of the
            parameters; "auto" = world size / tensor_parallel_size.
        tensor_parallel_size: ranks that split every block's heads and MLP between them (keep it
            within one node: it communicates in every layer).
        save_distributed_checkpoint: True: each rank writes its shard (a checkpoint folder);
            False: rank 0 assembles a single `.ckpt` file (what `zoo generate` and `init_from` read).
        process_group_backend: "nccl" on GPUs, "gloo" on CPUs (default: by device).
    """

    def __init__(
        self,
        data_parallel_size: Union[Literal["auto"], int] = "auto",
        tensor_parallel_size: int = 1,
        save_distributed_checkpoint: bool = True,
        process_group_backend: Optional[str] = None,
    ):
        super().__init__(data_parallel_size, tensor_parallel_size, save_distributed_checkpoint, process_group_backend)

    def setup_environment(self) -> None:
        tp, world = self._tensor_parallel_size, self.world_size
        if not isinstance(tp, int) or tp < 1 or world % tp:
            raise ZooError(f"tensor_parallel_size={tp} must divide the {world} processes; "
                           "set --trainer.strategy.init_args.tensor_parallel_size")
        if self._data_parallel_size == "auto":
            self._data_parallel_size = world // tp
        if self._data_parallel_size * tp != world:
            raise ZooError(f"data_parallel_size={self._data_parallel_size} × tensor_parallel_size={tp} must equal "
                           f"the {world} processes (devices × num_nodes); set data_parallel_size to \"auto\"")
        super().setup_environment()
