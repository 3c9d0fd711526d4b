"""Training data loaders: shuffling with a fixed epoch size, amplified sampling and cell memory replay."""

from __future__ import annotations

import torch
from monai.data import DataLoader
from torch.utils.data import ConcatDataset, Dataset, RandomSampler, Sampler

from cellzoo.engines.samplers import MemoryReplayBatchSampler


def training_loader(
    dataset: Dataset,
    batch_size: int,
    replay_dataset: Dataset | None = None,
    replay_per_batch: int = 1,
    sampler: Sampler | None = None,
    samples_per_epoch: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader:
    """A loader over `dataset`; with `replay_dataset`, each batch holds `replay_per_batch` replayed samples.

    `sampler` (e.g. AmplifiedSampler) orders the target samples; otherwise a shuffle of
    `samples_per_epoch` samples (default: the dataset size), which repeats images when a few-label
    set is smaller than an epoch should be. Replay batches are built by MemoryReplayBatchSampler over
    ConcatDataset([dataset, replay_dataset]).
    """
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty")
    if sampler is None:
        generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, num_samples=samples_per_epoch or len(dataset), generator=generator)
    if replay_dataset is None or len(replay_dataset) == 0 or replay_per_batch == 0:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    batch_sampler = MemoryReplayBatchSampler(
        n_target=len(dataset), n_replay=len(replay_dataset), batch_size=batch_size,
        replay_per_batch=replay_per_batch, seed=seed, target_sampler=sampler,
    )
    return DataLoader(ConcatDataset([dataset, replay_dataset]), batch_sampler=batch_sampler, num_workers=num_workers)


class SamplerEpochHandler:
    """Ignite handler: call `set_epoch(epoch)` on the loader's samplers when each epoch starts.

    MONAI's engines do this only for a DistributedSampler; AmplifiedSampler and MemoryReplayBatchSampler
    draw a new order per epoch only when told the epoch, so without this every epoch would repeat epoch 0.
    """

    def __init__(self, loader: DataLoader):
        self.samplers = [s for s in (loader.sampler, loader.batch_sampler) if hasattr(s, "set_epoch")]

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(engine.state.epoch)
