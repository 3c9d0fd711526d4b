"""Input masking for the reconstruction pretexts: PMC's padded masking and MAE-like masking.

- Padded masking (paper sec. 3.1): the image is tiled into cells of patch + 2 * border pixels; in each
  cell the central patch x patch square is zeroed with probability `prob`, its border never is, so masked
  areas never join up and whole cells are rarely hidden (384 px: 12-px patches, 3-px borders, p = 0.5).
- MAE-like masking (He et al. 2022): square patches (~27 px at 384, i.e. 16 of 224), exactly `ratio` of
  them (75%) zeroed.

Masks are boolean (H, W) arrays, True where the input is set to zero. `RandMaskd` masks each sample with
its own mask (the default); `BatchMasking` draws one mask for a whole batch (the authors' code does
this), for `cellzoo.methods.pmc.PretextBatch`. Both are written here: neither MONAI nor timm has them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["SCHEMES", "BatchMasking", "RandMaskd", "mae_mask", "make_mask", "padded_mask"]

SCHEMES = ("padded", "mae")


def padded_mask(height: int, width: int, rng: np.random.Generator, patch: int = 12, border: int = 3,
                prob: float = 0.5) -> np.ndarray:
    """Boolean (H, W): each cell of the (patch + 2 border) grid has its central patch masked with `prob`."""
    if patch < 1 or border < 0 or not 0 <= prob <= 1:
        raise ValueError(f"need patch >= 1, border >= 0 and 0 <= prob <= 1, got {patch}, {border}, {prob}")
    cell = patch + 2 * border
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    chosen = rng.random((rows, cols)) < prob
    # one cell as a stencil: its border False, its centre True; tiled, then ANDed with the draws
    stencil = np.zeros((cell, cell), dtype=bool)
    stencil[border:border + patch, border:border + patch] = True
    grid = np.kron(chosen, np.ones((cell, cell), dtype=bool)) & np.tile(stencil, (rows, cols))
    return grid[:height, :width]


def mae_mask(height: int, width: int, rng: np.random.Generator, patch: int = 27, ratio: float = 0.75) -> np.ndarray:
    """Boolean (H, W): round(ratio * n) of the n patch x patch squares, chosen at random, masked."""
    if patch < 1 or not 0 <= ratio <= 1:
        raise ValueError(f"need patch >= 1 and 0 <= ratio <= 1, got {patch}, {ratio}")
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    chosen = np.zeros(rows * cols, dtype=bool)
    chosen[rng.permutation(rows * cols)[: round(ratio * rows * cols)]] = True
    return np.kron(chosen.reshape(rows, cols), np.ones((patch, patch), dtype=bool))[:height, :width]


def make_mask(scheme: str, height: int, width: int, rng: np.random.Generator, **options) -> np.ndarray:
    """A mask of `scheme` ("padded" or "mae") with its options (patch, border, prob / patch, ratio)."""
    if scheme == "padded":
        return padded_mask(height, width, rng, **options)
    if scheme == "mae":
        return mae_mask(height, width, rng, **options)
    raise ValueError(f"masking scheme must be one of {SCHEMES}, got {scheme!r}")


class RandMaskd(RandomizableTransform, MapTransform):
    """Zero the masked pixels of every channel of `keys` ((C, H, W)), one new mask per sample."""

    def __init__(self, keys: KeysCollection, scheme: str = "padded", allow_missing_keys: bool = False, **options):
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        if scheme not in SCHEMES:
            raise ValueError(f"masking scheme must be one of {SCHEMES}, got {scheme!r}")
        self.scheme, self.options = scheme, options

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        height, width = d[keys[0]].shape[-2:]
        # a numpy Generator seeded from MONAI's random state, so set_random_state makes masks reproducible
        mask = make_mask(self.scheme, height, width, np.random.default_rng(self.R.randint(2**31)), **self.options)
        for key in keys:
            keep = torch.as_tensor(~mask) if isinstance(d[key], torch.Tensor) else ~mask
            d[key] = d[key] * keep
        return d


class BatchMasking:
    """One mask per batch, shared by its samples (the authors' code); callable on (B, C, H, W) tensors."""

    def __init__(self, scheme: str = "padded", seed: int = 0, **options):
        if scheme not in SCHEMES:
            raise ValueError(f"masking scheme must be one of {SCHEMES}, got {scheme!r}")
        self.scheme, self.options = scheme, options
        self.rng = np.random.default_rng(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mask = make_mask(self.scheme, images.shape[-2], images.shape[-1], self.rng, **self.options)
        return images * torch.as_tensor(~mask, device=images.device)
