"""MEDIAR samplers: amplified sampling of minor modalities (sec. 4.3) and cell memory replay (sec. 4.4)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from monai.data import DataLoader
from torch.utils.data import ConcatDataset, Dataset, Sampler

from cellzoo.engines.loaders import epoch_sampler, training_loader

__all__ = ["AmplifiedSampler", "MemoryReplayBatchSampler", "replay_loader"]


def _rng(seed: int, epoch: int) -> np.random.Generator:
    """Generator that depends only on (seed, epoch), so every epoch is reproducible on its own."""
    return np.random.default_rng([seed, epoch])


class AmplifiedSampler(Sampler[int]):
    """Each epoch yields every index once, plus repeats so each cluster contributes >= min_per_cluster.

    torch's WeightedRandomSampler draws with replacement and cannot guarantee per-cluster counts, so
    this is hand-written. As in the reference (datasetter.py), a cluster of n < min samples is filled
    cyclically to exactly min samples (each member floor(min/n) or ceil(min/n) times); with shuffle the
    members getting the extra copy, and the order of the epoch, change with set_epoch.
    """

    def __init__(
        self, cluster_ids: Sequence[int], min_per_cluster: int = 50, shuffle: bool = True, seed: int = 0
    ) -> None:
        self.cluster_ids = np.asarray(cluster_ids).reshape(-1)
        self.min_per_cluster = int(min_per_cluster)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.members = [np.flatnonzero(self.cluster_ids == c) for c in np.unique(self.cluster_ids)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order __iter__ yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return int(sum(max(len(m), self.min_per_cluster) for m in self.members))

    def epoch_indices(self) -> np.ndarray:
        """All indices of the current epoch, in yield order."""
        rng = _rng(self.seed, self.epoch)
        parts = []
        for members in self.members:
            members = rng.permutation(members) if self.shuffle else members
            size = max(len(members), self.min_per_cluster)
            parts.append(np.resize(members, size))  # np.resize repeats cyclically
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return rng.permutation(out) if self.shuffle else out

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())


class MemoryReplayBatchSampler(Sampler[list[int]]):
    """Index batches over ConcatDataset([target, replay]) with exactly replay_per_batch replay samples each.

    The other batch_size - replay_per_batch indices are target samples; replay indices are offset by
    n_target. Target order comes from `target_sampler` when given (e.g. an AmplifiedSampler over the
    target set, as MEDIAR fine-tuning combines both), else a permutation.
    Replay samples cycle through a fresh permutation of the replay set, like the reference's restarted
    public-data iterator; the epoch length is set by the target data.
    """

    def __init__(
        self,
        n_target: int,
        n_replay: int,
        batch_size: int = 9,
        replay_per_batch: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        target_sampler: Sampler[int] | None = None,
    ) -> None:
        if not 0 <= replay_per_batch < batch_size:
            raise ValueError(f"need 0 <= replay_per_batch < batch_size, got {replay_per_batch}, {batch_size}")
        if n_replay < 1 and replay_per_batch > 0:
            raise ValueError("replay_per_batch > 0 needs a non-empty replay set")
        self.n_target, self.n_replay = int(n_target), int(n_replay)
        self.batch_size, self.replay_per_batch = int(batch_size), int(replay_per_batch)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.target_sampler = target_sampler
        self.epoch = 0

    @property
    def n_target_per_batch(self) -> int:
        """Target samples in each batch."""
        return self.batch_size - self.replay_per_batch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; forwarded to target_sampler when it has set_epoch."""
        self.epoch = epoch
        if hasattr(self.target_sampler, "set_epoch"):
            self.target_sampler.set_epoch(epoch)

    def _target_order(self, rng: np.random.Generator) -> list[int]:
        """Target indices for this epoch."""
        if self.target_sampler is not None:
            return list(self.target_sampler)
        return (rng.permutation(self.n_target) if self.shuffle else np.arange(self.n_target)).tolist()

    def _n_target_samples(self) -> int:
        """How many target indices one epoch holds."""
        return len(self.target_sampler) if self.target_sampler is not None else self.n_target

    def __len__(self) -> int:
        n, k = self._n_target_samples(), self.n_target_per_batch
        return n // k if self.drop_last else math.ceil(n / k)

    def _replay_stream(self, rng: np.random.Generator) -> Iterator[int]:
        """Endless replay indices (offset by n_target), one permutation after another."""
        while True:
            order = rng.permutation(self.n_replay) if self.shuffle else np.arange(self.n_replay)
            yield from (self.n_target + order).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        rng = _rng(self.seed, self.epoch)
        target, replay, k = self._target_order(rng), self._replay_stream(rng), self.n_target_per_batch
        for start in range(0, len(self) * k, k):
            batch = target[start : start + k]
            yield batch + [next(replay) for _ in range(self.replay_per_batch)]


def replay_loader(dataset: Dataset, batch_size: int, replay_dataset: Dataset | None = None, replay_per_batch: int = 1,
                  sampler: Sampler | None = None, samples_per_epoch: int | None = None, num_workers: int = 0,
                  seed: int = 0, pin_memory: bool = False) -> DataLoader:
    """The training loader of MEDIAR fine-tuning: each batch holds `replay_per_batch` replayed public samples.

    Target samples are ordered by `sampler` (e.g. an AmplifiedSampler) or a shuffle of `samples_per_epoch`;
    without a replay set (or with replay_per_batch 0) this is the plain `training_loader`.
    """
    if replay_dataset is None or len(replay_dataset) == 0 or replay_per_batch == 0:
        return training_loader(dataset, batch_size, sampler, samples_per_epoch, num_workers, seed, pin_memory)
    target_sampler = sampler if sampler is not None else epoch_sampler(dataset, samples_per_epoch, seed)
    batch_sampler = MemoryReplayBatchSampler(
        n_target=len(dataset), n_replay=len(replay_dataset), batch_size=batch_size,
        replay_per_batch=replay_per_batch, seed=seed, target_sampler=target_sampler,
    )
    return DataLoader(ConcatDataset([dataset, replay_dataset]), batch_sampler=batch_sampler, num_workers=num_workers,
                      pin_memory=pin_memory)
