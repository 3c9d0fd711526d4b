"""What a multi-GPU run (torchrun + DistributedDataParallel) of any bundle needs beyond torch and MONAI.

Every bundle's `multi_gpu_train.yaml` uses these, so that the number of GPUs changes the speed of a run and
not its method:
- each process caches and trains on its own shard of the training items (`shard`), with its own seed for
  sampling and augmentation (`rank_seed`) and its share of an epoch's samples (`per_rank`): together the
  processes see what one process sees, instead of N copies of the same stream;
- validation shards cover every item exactly once when there are at least as many items as processes, and
  give every process every item otherwise (`validation_shard`): a per-image mean gathered from equal copies
  is the same mean, so a run with one validation image on 8 GPUs validates rather than stopping (MONAI's
  DistributedSampler refuses fewer items than ranks) or hanging (a process without items skips the
  evaluator while the others wait in the metric's all-gather);
- `agree` makes rank 0's decision everyone's (stop now, or not), for decisions that a clock takes.

Outside torchrun (no process group, no RANK variable) every function is the identity of one process.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["agree", "init_process_group", "is_distributed", "per_rank", "rank", "rank_seed", "shard",
           "sharded_dataset", "validation_shard", "world_size"]


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank: from the process group, else torchrun's RANK (configs read it before the group
    exists, e.g. for the seed), else 0."""
    return torch.distributed.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", "1"))


def rank_seed(seed: int) -> int:
    """A seed of this process's own: every process draws other crops and augmentations."""
    return int(seed) + 1000 * rank()


def per_rank(samples_per_epoch: int | None) -> int | None:
    """This process's share of an epoch's samples, so that an epoch (and a patience counted in epochs) means
    the same number of samples on any number of GPUs. None (one pass over the shard) stays None."""
    return None if samples_per_epoch is None else math.ceil(int(samples_per_epoch) / world_size())


def shard(items: Sequence, seed: int = 0) -> list:
    """This process's part of the training items: a seeded shuffle dealt round-robin, every process the same
    number of items (ceil(n / world)), items repeated only where there are fewer than that many per process.

    Written here because MONAI's `partition_dataset(even_divisible=True)` pads with at most n items, which
    leaves processes empty when there are more than twice as many processes as items (few-label runs)."""
    items, world, me = list(items), world_size(), rank()
    if world == 1 or not items:
        return items
    order = np.random.default_rng(seed).permutation(len(items))
    per = math.ceil(len(items) / world)
    return [items[order[(me + k * world) % len(items)]] for k in range(per)]


def validation_shard(items: Sequence) -> list:
    """This process's validation items: each item on exactly one process when there are at least as many
    items as processes (round-robin, uneven counts allowed: MONAI's metric gather handles them), every item
    on every process otherwise."""
    items, world = list(items), world_size()
    if world == 1 or len(items) < world:
        return items
    return items[rank()::world]


def sharded_dataset(data: Sequence, dataset_class, seed: int = 0, validation: bool = False, **kwargs):
    """`dataset_class(data=<this process's shard>, **kwargs)`: a CacheDataset then caches only the shard
    (host memory no longer grows with the number of GPUs)."""
    part = validation_shard(data) if validation else shard(data, seed)
    return dataset_class(data=part, **kwargs)


def init_process_group(backend: str | None = None, timeout_minutes: float = 60.0) -> None:
    """Join torchrun's process group (once). The timeout bounds how long a process waits for the others in
    a collective, e.g. while the slowest one validates."""
    if is_distributed():
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=float(timeout_minutes)))


def agree(flag: bool) -> bool:
    """Rank 0's `flag` on every process (itself outside a distributed run); ignite's broadcast puts the
    value on the backend's device (NCCL needs it on the GPU)."""
    import ignite.distributed as idist

    return bool(idist.broadcast(1.0 if flag else 0.0, src=0))
