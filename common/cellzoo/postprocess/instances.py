"""Clean-up shared by every maps -> instances step."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import relabel_sequential


def remove_small_instances(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Int32 copy of `labels` without instances under `min_size` px, renumbered 1..n."""
    # Written by hand (bincount): skimage's remove_small_objects renamed min_size to max_size with a
    # changed meaning in 0.26, and cellzoo supports scikit-image from 0.22.
    labels = np.asarray(labels).astype(np.int32, copy=True)
    if min_size > 0 and labels.any():
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < min_size] = 0
    return relabel_sequential(labels)[0].astype(np.int32)
