"""Per-image intensity handling of the paper (sec. 2.3): z-score with denormalisation of the output, CLAHE.

"We normalized all data (input and output) sample by sample, by subtracting the mean and dividing by the
standard deviation. Both values are later used to denormalize the data before submission." At inference
only the input is known, so its mean and standard deviation are the ones kept and applied to the output.
MONAI's NormalizeIntensity does not keep them (nor invert), hence `ZScored` / `Denormalized`. CLAHE
(skimage's equalize_adapthist) was tried in the paper and hurt (PSNR 25.2 -> 29.3 without it), so it is
off by default.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["Clahed", "Denormalized", "ZScored", "clahe"]

STATS_SUFFIX = "_stats"


class ZScored(MapTransform):
    """(x - mean) / std per image; with `keep_stats`, [mean, std] are stored under `<key>_stats` (float32)."""

    def __init__(self, keys: KeysCollection, keep_stats: bool = False, eps: float = 1e-6,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.keep_stats, self.eps = keep_stats, eps

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key]).float()
            mean, std = x.mean(), x.std(unbiased=False)
            # a flat image has no contrast to scale; dividing by eps would only amplify noise
            d[key] = (x - mean) / (std if std > self.eps else 1.0)
            if self.keep_stats:
                d[f"{key}{STATS_SUFFIX}"] = torch.stack([mean, std if std > self.eps else torch.ones(())])
        return d


class Denormalized(MapTransform):
    """pred * std + mean with the [mean, std] a `ZScored(..., keep_stats=True)` stored (the input's)."""

    def __init__(self, keys: KeysCollection, stats_key: str = "image" + STATS_SUFFIX, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.stats_key = stats_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        stats = torch.as_tensor(d[self.stats_key]).float().reshape(-1)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            d[key] = x * stats[1].to(x.device) + stats[0].to(x.device)
        return d


def clahe(image: np.ndarray, clip_limit: float = 0.01, kernel_size: int | None = None) -> np.ndarray:
    """skimage CLAHE of each channel of a (C, H, W) image after a 0.1-99.9 percentile scaling to [0, 1]."""
    from skimage.exposure import equalize_adapthist

    out = np.empty(np.shape(image), dtype=np.float32)
    for c, plane in enumerate(np.asarray(image, dtype=np.float64)):
        low, high = np.percentile(plane, [0.1, 99.9])
        scaled = np.clip((plane - low) / (high - low), 0, 1) if high > low else np.zeros_like(plane)
        out[c] = equalize_adapthist(scaled, kernel_size=kernel_size, clip_limit=clip_limit)
    return out


class Clahed(MapTransform):
    """`clahe` on each key's (C, H, W) image."""

    def __init__(self, keys: KeysCollection, clip_limit: float = 0.01, kernel_size: int | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.clip_limit, self.kernel_size = clip_limit, kernel_size

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = clahe(np.asarray(torch.as_tensor(d[key]).cpu()), self.clip_limit, self.kernel_size)
        return d
