"""Training data loaders with a fixed epoch size, and the handler that tells samplers the epoch."""

from __future__ import annotations

import torch
from monai.data import DataLoader
from torch.utils.data import Dataset, RandomSampler, Sampler

from cellzoo.errors import InputError


def epoch_sampler(dataset: Dataset, samples_per_epoch: int | None = None, seed: int = 0) -> RandomSampler:
    """A shuffle of `samples_per_epoch` samples (default: the dataset size), repeating images when a
    few-label set is smaller than an epoch should be."""
    if len(dataset) == 0:
        raise InputError("the training dataset is empty")
    generator = torch.Generator().manual_seed(seed)
    return RandomSampler(dataset, num_samples=samples_per_epoch or len(dataset), generator=generator)


def training_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None = None,
                    samples_per_epoch: int | None = None, num_workers: int = 0, seed: int = 0,
                    pin_memory: bool = False) -> DataLoader:
    """A loader over `dataset`, ordered by `sampler` (e.g. a DistributedSampler) or by `epoch_sampler`;
    `pin_memory` (page-locked batches) lets a GPU copy them asynchronously (the engines' `non_blocking`)."""
    sampler = sampler if sampler is not None else epoch_sampler(dataset, samples_per_epoch, seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory)


class SamplerEpochHandler:
    """Ignite handler: call `set_epoch(epoch)` on the loader's samplers when each epoch starts.

    MONAI's engines do this only for a DistributedSampler; samplers that draw a new order per epoch only
    when told the epoch (MEDIAR's amplified and replay samplers) would otherwise repeat epoch 0 forever.
    """

    def __init__(self, loader: DataLoader):
        self.samplers = [s for s in (loader.sampler, loader.batch_sampler) if hasattr(s, "set_epoch")]

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(engine.state.epoch)
