"""Reading images inside MONAI pipelines through cellzoo's reader (explicit axes, the same checks everywhere)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.config import NdarrayOrTensor
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.transforms import MapTransform
from monai.transforms.utils_pytorch_numpy_unification import concatenate, repeat
from monai.utils import ensure_tuple

from cellzoo.errors import InputError
from cellzoo.io.files import RASTER_SUFFIXES, TIFF_SUFFIXES
from cellzoo.io.images import read_image, to_channel_first

__all__ = ["CellImageReader", "LoadPlanesd", "as_cyx", "to_three_channels"]


def as_cyx(array: np.ndarray, axes: str) -> np.ndarray:
    """A 2D image with its axes string (YX, YXC, CYX) as a channel-first (C, H, W) array, dtype kept."""
    # A 4th interleaved sample (YXC, e.g. RGBA png) is alpha; planar CYX channels are data and kept.
    array, found = to_channel_first(array, axes, dtype=None, drop_alpha=axes.endswith("C"))
    if found != "CYX":
        raise InputError(f"expected a 2D image (optionally with channels), got axes '{found}'")
    return array


class CellImageReader(ImageReader):
    """MONAI reader for 2D tif/png/bmp/jpg through cellzoo.io.images; yields (C, H, W), alpha dropped.

    MONAI's PILReader transposes 2D images and fails on many 16/32-bit TIFFs, and ITKReader is an
    extra dependency, so this thin adapter reuses cellzoo's own reader.
    """

    suffixes = tuple(s.lstrip(".") for s in TIFF_SUFFIXES + RASTER_SUFFIXES)

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True for a single tif/tiff/png/bmp/jpg path."""
        return is_supported_format(filename, list(self.suffixes))

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: object) -> tuple[np.ndarray, str]:
        """Read one file into (array, axes)."""
        names = ensure_tuple(data)
        if len(names) != 1:
            raise InputError(f"CellImageReader reads one file at a time, got {len(names)}")
        return read_image(names[0])

    def get_data(self, img: tuple[np.ndarray, str]) -> tuple[np.ndarray, dict]:
        """Channel-first array and the metadata MONAI needs (channel dim 0)."""
        array = as_cyx(*img)
        return array, {"spatial_shape": np.asarray(array.shape[1:]), "original_channel_dim": 0}


class LoadPlanesd(MapTransform):
    """Read the file (or list of files) under each key and stack the planes as channels: (C, H, W) float32.

    Planes come from separate files (one per focal plane or modality), which MONAI's LoadImaged would read
    through a reader per file; cellzoo's reader keeps the axes handling of the rest of the package.
    """

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            paths = [d[key]] if isinstance(d[key], (str, Path)) else list(d[key])
            planes = [as_cyx(*read_image(path)) for path in paths]
            shapes = {plane.shape[1:] for plane in planes}
            if len(shapes) != 1:
                raise InputError(f"the planes of one field differ in size: {sorted(shapes)}", paths[0])
            d[key] = np.concatenate(planes).astype(np.float32)
        return d


def to_three_channels(img: NdarrayOrTensor) -> NdarrayOrTensor:
    """(C, H, W) -> (3, H, W): repeat a single channel, zero-pad two, keep the first three of more."""
    if img.shape[0] == 1:
        return repeat(img, 3, axis=0)
    if img.shape[0] == 2:
        return concatenate([img, img[:1] * 0], axis=0)
    return img[:3]
