"""Training-time randomness of the paper: a random focal plane per sample, light and heavy augmentation, GridMask.

- `RandomPlaned`: the paper's custom loader "randomly selects one of the out-of-focus versions for each
  batch"; here one plane per sample, drawn anew every time the sample is loaded (so every epoch).
- light augmentation (the paper's CNN baseline): 90-degree rotations, flips, brightness.
- heavy augmentation (the paper's final models, "Heavy DA"): random-angle rotations, flips, elastic
  deformation, contrast and brightness, and GridMask (Chen et al. 2020) on the input.
MONAI provides all but GridMask, which no installed library (MONAI, torchvision, timm, skimage) offers;
`grid_mask` is written by hand from the GridMask paper.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Rand2DElasticd,
    RandFlipd,
    RandomizableTransform,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.transforms.transform import MapTransform

__all__ = ["AUGMENTATIONS", "RandGridMaskd", "RandomPlaned", "augmentation_chain", "grid_mask"]

AUGMENTATIONS = ("none", "light", "heavy")


class RandomPlaned(RandomizableTransform, MapTransform):
    """Replace a list of plane files under each key by one of them, drawn at random at every call."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (list, tuple)):
                d[key] = d[key][int(self.R.randint(len(d[key])))]
        return d


def grid_mask(shape: Sequence[int], unit: float, ratio: float, offset: Sequence[float], angle: float = 0.0) -> np.ndarray:
    """(H, W) bool, True = erased: in every `unit` x `unit` cell of a grid rotated by `angle` (radians) and
    shifted by `offset`, a square of side `ratio * unit` is erased (GridMask, Chen et al. 2020, fig. 3)."""
    rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64),
                             indexing="ij")
    # grid coordinates: the pixel grid rotated about the image centre
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    u = (rows - cy) * math.cos(angle) - (cols - cx) * math.sin(angle) + offset[0]
    v = (rows - cy) * math.sin(angle) + (cols - cx) * math.cos(angle) + offset[1]
    side = ratio * unit
    return (np.mod(u, unit) < side) & (np.mod(v, unit) < side)


class RandGridMaskd(RandomizableTransform, MapTransform):
    """GridMask on (C, H, W) images: with probability `prob`, erase a rotated grid of squares (set to `fill`).

    The unit size is drawn in `unit_range` (fractions of the shorter image side), the grid offset
    uniformly within a unit, the angle in [0, `max_angle`) degrees; `ratio` is the erased square's side
    over the unit (erased area ~ ratio**2). Applied to the input only: the target stays whole, so the
    network learns to fill in the erased structure from its context.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, unit_range: tuple[float, float] = (0.1, 0.3),
                 ratio: float = 0.5, max_angle: float = 90.0, fill: float = 0.0, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 < ratio < 1 or not 0 < unit_range[0] <= unit_range[1]:
            raise ValueError(f"GridMask needs 0 < ratio < 1 and 0 < unit_range[0] <= unit_range[1], got {ratio}, "
                             f"{unit_range}")
        self.unit_range, self.ratio, self.max_angle, self.fill = tuple(unit_range), float(ratio), max_angle, fill

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            unit = self.R.uniform(*self.unit_range) * min(x.shape[-2:])
            mask = grid_mask(x.shape[-2:], unit, self.ratio, self.R.uniform(0, unit, size=2),
                             math.radians(self.R.uniform(0, self.max_angle)))
            x = x.clone()
            x[..., torch.from_numpy(mask)] = self.fill
            d[key] = x
        return d


def augmentation_chain(keys: Sequence[str], image_key: str, level: str, roi_size: int) -> list:
    """Augmentation transforms: spatial ones on every key, intensity ones and GridMask on the input only."""
    if level not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {level!r}")
    keys = list(keys)
    flips = [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]
    if level == "none":
        return []
    if level == "light":
        return [RandRotate90d(keys, prob=0.5, max_k=3), *flips, RandShiftIntensityd(image_key, offsets=0.2, prob=0.5)]
    # reflection padding: rotated and deformed crops get mirrored content at their corners, not black wedges
    return [
        RandRotated(keys, range_x=math.pi, prob=0.5, keep_size=True, padding_mode="reflection"),
        *flips,
        Rand2DElasticd(keys, spacing=max(8, roi_size // 8), magnitude_range=(1.0, 3.0), prob=0.3,
                       padding_mode="reflection"),
        RandScaleIntensityd(image_key, factors=0.3, prob=0.5),  # contrast: the input is z-scored, so about its mean
        RandShiftIntensityd(image_key, offsets=0.3, prob=0.5),  # brightness
        RandGridMaskd(image_key, prob=0.5),
    ]
