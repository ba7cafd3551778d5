"""Training loaders that resume mid-epoch: the same batches, in the same order, as a run never stopped.

Lightning 2.x checkpoints the state of every training DataLoader that has ``state_dict`` /
``load_state_dict`` (``FitLoop.on_save_checkpoint`` → ``CombinedLoader._state_dicts``) and hands it
back before the loader's first ``iter()`` after a restart. ``ResumableLoader`` is that loader: its
state is (epoch, batches already yielded this epoch). ``ResumableSampler`` is a ``DistributedSampler``
— the order is ``randperm(n, seed + epoch)``, padded and strided over the data-parallel ranks — that
can start an epoch ``start`` indices in, so a resumed run skips the batches it already trained on
without loading them. Being a ``DistributedSampler``, Lightning leaves it in place under DDP/FSDP
instead of swapping in its own.

Counting happens where batches leave the loader, not in the sampler: worker processes read ahead
of training by ``prefetch_factor`` batches, so the sampler's position overstates what was trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` semantics (seed + epoch shuffle, padding, rank striding) plus a start offset.

    Args:
        dataset: the examples (only its length is read).
        seed: shuffle seed; epoch ``e`` uses ``seed + e`` (Lightning calls ``set_epoch``).
        shuffle: shuffle, or read in order.
        num_replicas, rank: the data-parallel world size and this rank (default: one process).
        epoch_keys: yield ``epoch · len(dataset) + i`` instead of ``i``, for datasets that read the
            epoch off the key (``zoo.data.pretraining.NoisedChunks``: a fresh mask every epoch).
    """

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0, epoch_keys: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.epoch_keys = epoch_keys
        self.start = 0  # indices of this rank's share to skip, consumed by the next __iter__

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        offset = self.epoch * len(self.dataset) if self.epoch_keys else 0  # type: ignore[arg-type]
        return iter([offset + i for i in indices[start:]])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableSampler`` whose position Lightning saves in checkpoints.

    ``state_dict()`` is ``{"epoch", "batches"}``: batches yielded in that epoch. After
    ``load_state_dict``, the next iteration of the same epoch skips those batches; an iteration of
    another epoch (the checkpoint closed its epoch) starts at the beginning.
    """

    _resume: Optional[dict] = None
    _epoch: int = 0
    _yielded: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)

    def __iter__(self) -> Iterator[Any]:
        # A generator: this body runs at the first next(), after Lightning's set_epoch for the epoch.
        sampler = self.sampler
        assert isinstance(sampler, ResumableSampler), "ResumableLoader needs a ResumableSampler"
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume is not None and resume["epoch"] == sampler.epoch else 0
        sampler.start = skip * (self.batch_size or 1)
        self._epoch, self._yielded = sampler.epoch, skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch


def data_parallel_rank(trainer: Any) -> dict[str, int]:
    """``{"num_replicas", "rank"}`` of the data-parallel group the trainer runs in (1, 0 without one)."""
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
    if kwargs:
        return {"num_replicas": int(kwargs["num_replicas"]), "rank": int(kwargs["rank"])}
    return {"num_replicas": 1, "rank": 0}


def resumable_loader(dataset: Dataset, batch_size: int, seed: int, trainer: Any = None, shuffle: bool = True,
                     epoch_keys: bool = False, **loader_kwargs: Any) -> ResumableLoader:
    """The training loader every zoo data module uses: seeded, sharded over ranks, resumable mid-epoch.

    ``trainer`` (a data module's ``self.trainer``) gives the data-parallel rank; ``loader_kwargs``
    go to ``DataLoader`` (``num_workers``, ``collate_fn``, ``drop_last``...).
    """
    sampler = ResumableSampler(dataset, seed=seed, shuffle=shuffle, epoch_keys=epoch_keys,
                               **data_parallel_rank(trainer))
    # Each iterator draws its workers' base seed from `generator`; without one it would draw from
    # torch's global generator, at a different moment in a resumed run, and shift dropout.
    generator = torch.Generator().manual_seed(seed)
    return ResumableLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **loader_kwargs)


def evaluation_loader(dataset: Dataset, batch_size: int, seed: int, **loader_kwargs: Any) -> DataLoader:
    """An in-order loader whose iterators take their worker seed from a private generator.

    A plain DataLoader draws it from torch's global generator each time an iterator is made, and
    Lightning makes validation iterators at moments that differ between a resumed run and one that
    never stopped (it fast-forwards a validation that was due at the checkpoint): that draw would
    shift every random number training uses afterwards.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=generator, **loader_kwargs)


__all__ = ["ResumableLoader", "ResumableSampler", "data_parallel_rank", "evaluation_loader", "resumable_loader"]
