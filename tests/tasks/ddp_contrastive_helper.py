"""Run by tests/tasks/test_contrastive.py in a subprocess: the Contrastive loss under DDP (gloo, 2 CPU
processes × b pairs) against one process on the same 2b pairs. Writes a JSON report.

    python ddp_contrastive_helper.py PORT OUT.json
"""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

WORLD, B_LOCAL = 2, 4


def build():
    from zoo.models import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
    from zoo.tasks import Contrastive

    torch.manual_seed(0)
    cfg = CLIPConfig(vocab_size=40, projection_dim=16,
                     vision=CLIPVisionConfig(image_size=8, patch_size=4, d_model=16, n_layer=1, n_head=2),
                     text=CLIPTextConfig(max_seq_len=8, d_model=16, n_layer=1, n_head=2, eos_token_id=1))
    return Contrastive(CLIP(cfg))


def global_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    n = WORLD * B_LOCAL
    ids = torch.randint(2, 40, (n, 6), generator=g)
    mask = torch.ones(n, 6, dtype=torch.long)
    lengths = torch.randint(2, 7, (n,), generator=g)
    for row, length in enumerate(lengths.tolist()):
        ids[row, length - 1], ids[row, length:], mask[row, length:] = 1, 0, 0
    return {"pixel_values": torch.randn(n, 3, 8, 8, generator=g), "input_ids": ids, "attention_mask": mask}


def gradients(task) -> dict:
    return {name: p.grad.detach().clone() for name, p in task.model.named_parameters()}


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    task = build()
    task.model = DDP(task.model)  # the real DDP gradient averaging
    rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    batch = {k: v[rows] for k, v in global_batch().items()}
    loss, _ = task.contrastive_step(batch)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)  # the global loss is the mean of the equal-sized ranks' losses
    if rank == 0:
        grads = {k.removeprefix("module."): v for k, v in gradients(task).items()}
        torch.save({"loss": mean_loss / WORLD, "grads": grads}, out)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    task = build()
    loss, _ = task.contrastive_step(global_batch())
    loss.backward()
    single = gradients(task)
    mp.spawn(worker, args=(port, out + ".pt"), nprocs=WORLD, join=True)
    ddp = torch.load(out + ".pt", weights_only=True)
    report = {
        "single_loss": loss.item(),
        "ddp_loss": ddp["loss"].item(),
        "max_grad_diff": max((single[k] - ddp["grads"][k]).abs().max().item() for k in single),
        "max_grad": max(g.abs().max().item() for g in single.values()),
        "names_match": sorted(single) == sorted(ddp["grads"]),
        "logit_scale_grad": single["logit_scale"].item(),
    }
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
