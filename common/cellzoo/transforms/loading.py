"""Reading images inside MONAI pipelines through cellzoo's reader (explicit axes, the same checks everywhere)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
from monai.config import NdarrayOrTensor
from monai.transforms import MapTransform
from monai.transforms.utils_pytorch_numpy_unification import concatenate, repeat

from cellzoo.errors import InputError
from cellzoo.io.images import read_image, to_channel_first
from cellzoo.io.validate import check_finite, check_label_image

__all__ = ["LoadImagesd", "as_cyx", "read_channels", "to_three_channels"]


def as_cyx(array: np.ndarray, axes: str, path: str | Path | None = None) -> np.ndarray:
    """A 2D image with its axes string (YX, YXC, CYX) as a channel-first (C, H, W) array, dtype kept."""
    # A 4th interleaved sample (YXC, e.g. RGBA png) is alpha; planar CYX channels are data and kept.
    array, found = to_channel_first(array, axes, dtype=None, drop_alpha=axes.endswith("C"))
    if found != "CYX":
        raise InputError(f"expected a 2D image (optionally with channels), got axes '{found}' with shape "
                         f"{array.shape}", path)
    return array


def read_channels(path: str | Path, labels: bool = False) -> np.ndarray:
    """One 2D image file as (C, H, W), through cellzoo's reader and its checks; errors name the file.

    Ambiguous axes (e.g. a multi-page TIFF without axes metadata) and 3D stacks are refused, as are NaN or
    inf pixels; with `labels`, the file must be an integer label image (it may hold no cell).
    """
    array, axes = read_image(path)
    if labels:
        return check_label_image(as_cyx(array, axes, path), path, ndim=(3,), allow_empty=True)
    return check_finite(as_cyx(array, axes, path), path)


class LoadImagesd(MapTransform):
    """Read the file (or list of files) under each key, stacking the planes as channels: (C, H, W) `dtype`.

    Every bundle pipeline reads images through this transform, never through MONAI's LoadImaged, whose
    fallback readers would take a file cellzoo's reader refused (a multi-page TIFF of unknown axes read
    as 2D) and whose errors do not always name the file. Planes in separate files (focal planes,
    modalities) must share one size. `labels=True` reads integer label images (see `read_channels`).
    `plane_channels`, when given, is the number of channels every file must have (1: a grey plane), so
    that an RGB file given to a one-channel network is refused naming the file, not deep in a convolution.
    """

    def __init__(self, keys, dtype=np.float32, labels: bool = False, plane_channels: int | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.dtype, self.labels, self.plane_channels = dtype, labels, plane_channels

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            paths = [d[key]] if isinstance(d[key], (str, Path)) else list(d[key])
            planes = [read_channels(path, self.labels) for path in paths]
            for path, plane in zip(paths, planes):
                if self.plane_channels is not None and plane.shape[0] != self.plane_channels:
                    remedy = "give one grey plane per file" if self.plane_channels == 1 else \
                        f"give {self.plane_channels}-channel files"
                    raise InputError(f"expected {self.plane_channels} channel(s) per image file, got "
                                     f"{plane.shape[0]} (shape {plane.shape}): {remedy}", path)
            shapes = {plane.shape[1:] for plane in planes}
            if len(shapes) != 1:
                raise InputError(f"the planes of one item differ in size: {sorted(shapes)}", paths[0])
            d[key] = np.concatenate(planes).astype(self.dtype)
        return d


def to_three_channels(img: NdarrayOrTensor) -> NdarrayOrTensor:
    """(C, H, W) -> (3, H, W): repeat a single channel, zero-pad two, keep the first three of more."""
    if img.shape[0] == 1:
        return repeat(img, 3, axis=0)
    if img.shape[0] == 2:
        return concatenate([img, img[:1] * 0], axis=0)
    return img[:3]
