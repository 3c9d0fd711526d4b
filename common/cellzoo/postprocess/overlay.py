"""Instance outlines drawn over a display-scaled image, for quick visual checks of a segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.exposure import rescale_intensity
from skimage.segmentation import find_boundaries

from cellzoo.errors import InputError
from cellzoo.io.images import write_png

#: Percentiles mapped to 0 and 255: robust to a few hot pixels, unlike min/max.
DISPLAY_PERCENTILES = (1.0, 99.8)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """YX or YXC (1-4 channels, any dtype) -> uint8 (H, W, 3), each channel scaled to its 1..99.8 percentiles.

    Channels are scaled separately because microscopy channels are independent stains with unrelated
    ranges. 1 channel -> grey, 2 -> red/green, 3 -> RGB, 4 -> RGB with the 4th (alpha) dropped.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or not 1 <= image.shape[-1] <= 4:
        raise InputError(f"overlay needs a YX or YXC image with 1 to 4 channels, got shape {image.shape}")
    channels = [_scale_uint8(image[..., c]) for c in range(min(image.shape[-1], 3))]
    if len(channels) == 1:
        channels *= 3
    elif len(channels) == 2:
        channels.append(np.zeros_like(channels[0]))
    return np.stack(channels, axis=-1)


def _scale_uint8(channel: np.ndarray) -> np.ndarray:
    """Map the display percentiles of one channel to 0..255, clipping outside them."""
    channel = channel.astype(np.float32)
    low, high = np.percentile(channel, DISPLAY_PERCENTILES)
    if high <= low:  # flat image: nothing to stretch, show it black rather than divide by zero
        return np.zeros(channel.shape, dtype=np.uint8)
    scaled = rescale_intensity(channel, in_range=(float(low), float(high)), out_range=(0.0, 255.0))
    return np.round(scaled).astype(np.uint8)


def overlay_outlines(
    image: np.ndarray, labels: np.ndarray, color: tuple[int, int, int] = (255, 255, 0)
) -> np.ndarray:
    """uint8 (H, W, 3) display image with each instance's inner boundary painted in `color`."""
    rgb = display_rgb(image)
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise InputError(f"labels shape {labels.shape} does not match image shape {rgb.shape[:2]}")
    # mode="inner" keeps outlines inside each cell, so two touching cells show two separate outlines.
    rgb[find_boundaries(labels, mode="inner")] = np.asarray(color, dtype=np.uint8)
    return rgb


def write_overlay_png(
    path: str | Path, image: np.ndarray, labels: np.ndarray, color: tuple[int, int, int] = (255, 255, 0)
) -> Path:
    """Write overlay_outlines(image, labels) as an 8-bit RGB PNG (atomically, via cellzoo.io.images)."""
    return write_png(path, overlay_outlines(image, labels, color))
