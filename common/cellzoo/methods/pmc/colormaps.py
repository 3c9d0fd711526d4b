"""Pseudo-colour targets: an intensity image in [0, 1] through a colormap, as a 256-entry lookup table.

The paper maps images through matplotlib colormaps (`nipy_spectral` for PMC; `rainbow`, `viridis`,
`seismic` compared). The tables are read once from matplotlib's colormap registry (no pyplot, no plotting
backend) and applied by indexing, with matplotlib's own quantisation (floor(x * 256), 1.0 -> 255), so
`colorize(x)` equals `matplotlib.colormaps[name](x)[..., :3]` exactly, for numpy arrays and torch tensors.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

__all__ = ["COLORMAPS", "colorize", "lookup_table"]

COLORMAPS = ("nipy_spectral", "rainbow", "viridis", "seismic")
LEVELS = 256


@cache
def lookup_table(name: str) -> np.ndarray:
    """(256, 3) float32 RGB table of a colormap in COLORMAPS."""
    if name not in COLORMAPS:
        raise ValueError(f"colormap must be one of {COLORMAPS}, got {name!r}")
    import matplotlib

    cmap = matplotlib.colormaps[name].resampled(LEVELS)
    table = cmap(np.arange(LEVELS))[:, :3].astype(np.float32)  # integer indices: the table itself, no RGBA
    table.setflags(write=False)
    return table


def _indices(image):
    """matplotlib's quantisation of [0, 1] floats to table rows: floor(x * 256), clipped to 0..255."""
    if isinstance(image, torch.Tensor):
        return torch.clamp(torch.floor(image.float() * LEVELS), 0, LEVELS - 1).long()
    return np.clip(np.floor(np.asarray(image, dtype=np.float64) * LEVELS), 0, LEVELS - 1).astype(np.int64)


def colorize(image, name: str = "nipy_spectral"):
    """(1, H, W) or (H, W) intensities in [0, 1] -> (3, H, W) RGB in [0, 1] (numpy or torch, as given)."""
    if image.ndim == 3:
        if image.shape[0] != 1:
            raise ValueError(f"colorize takes one channel, got shape {tuple(image.shape)}")
        image = image[0]
    table = lookup_table(name)
    index = _indices(image)
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(table.copy()).to(image.device)[index].permute(2, 0, 1).contiguous()
    return np.ascontiguousarray(np.moveaxis(table[index], -1, 0))
