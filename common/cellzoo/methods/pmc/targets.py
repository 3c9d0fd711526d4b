"""CellCentroidFormer's training targets (paper sec. 3.2): a centroid heatmap and height/width maps, from
instance labels or from boxes.

- Heatmap: per cell a filled ellipse centred on its box, semi-axes (w // 2.5, h // 2.5), smoothed with a
  normalised box filter of kernel (w // 1.5, h // 1.5) (the authors' code); cells are combined by their
  maximum (the authors add them, which lets touching cells' blobs exceed 1 and merge).
- Height and width: a rectangle of 50% of the cell's box around its centre, filled with h / size_scale
  and w / size_scale. The paper scales by the input size (384); here `size_scale` is fixed per model (the
  training crop size by default), so whole images of any size decode to pixels with the same factor.

Boxes are COCO (x, y, w, h) in pixels with the tight box of a mask (`labels_to_boxes`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage
from skimage.draw import ellipse

__all__ = ["CentroidTargetsd", "box_heatmap", "labels_to_boxes", "size_maps", "targets_from_boxes"]


def labels_to_boxes(labels: np.ndarray) -> np.ndarray:
    """(N, 4) float array of tight [x, y, w, h] boxes of the instances of a 2D label image, by label order."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels_to_boxes takes a 2D label image, got shape {labels.shape}")
    boxes = [(s[1].start, s[0].start, s[1].stop - s[1].start, s[0].stop - s[0].start)
             for s in ndimage.find_objects(labels.astype(np.int64, copy=False)) if s is not None]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def _box_ints(box) -> tuple[int, int, int, int]:
    x, y, w, h = (round(float(v)) for v in box)
    return x, y, max(w, 1), max(h, 1)


def box_heatmap(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 centroid heatmap in [0, 1]: box-filtered ellipses, one per box, combined by maximum."""
    heatmap = np.zeros(shape, dtype=np.float32)
    for box in np.asarray(boxes).reshape(-1, 4):
        x, y, w, h = _box_ints(box)
        # the filter reaches at most one box size beyond the box: work in that window only
        y0, y1 = max(y - h, 0), min(y + 2 * h, shape[0])
        x0, x1 = max(x - w, 0), min(x + 2 * w, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        blob = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        # a semi-axis of 0 (cells under 3 px) still marks the centre pixel, as OpenCV's ellipse does
        # centred on the box centre in pixel-index coordinates (the authors round it to x + w // 2)
        rows, cols = ellipse(y + h / 2 - 0.5 - y0, x + w / 2 - 0.5 - x0, max(h // 2.5, 0.5), max(w // 2.5, 0.5),
                             shape=blob.shape)
        blob[rows, cols] = 1.0
        kernel = (int(h // 1.5), int(w // 1.5))
        if min(kernel) > 0:
            blob = ndimage.uniform_filter(blob, size=kernel, mode="constant")
        np.maximum(heatmap[y0:y1, x0:x1], blob, out=heatmap[y0:y1, x0:x1])
    return heatmap


def size_maps(boxes: np.ndarray, shape: tuple[int, int], size_scale: float) -> np.ndarray:
    """(2, H, W) float32 [height, width] / size_scale, in the central 50% rectangle of each box."""
    maps = np.zeros((2, *shape), dtype=np.float32)
    for box in np.asarray(boxes).reshape(-1, 4):
        x, y, w, h = _box_ints(box)
        # corners as in the authors' code (inclusive end points)
        top, left = y + int(0.5 * h // 2), x + int(0.5 * w // 2)
        bottom, right = y + int(1.5 * h // 2), x + int(1.5 * w // 2)
        rows = slice(max(top, 0), max(min(bottom + 1, shape[0]), 0))
        cols = slice(max(left, 0), max(min(right + 1, shape[1]), 0))
        maps[0, rows, cols] = h / size_scale
        maps[1, rows, cols] = w / size_scale
    return maps


def targets_from_boxes(boxes: np.ndarray, shape: tuple[int, int], size_scale: float) -> np.ndarray:
    """(3, H, W) float32 [heatmap, height, width] target of a set of boxes."""
    return np.concatenate([box_heatmap(boxes, shape)[None], size_maps(boxes, shape, size_scale)])


class CentroidTargetsd(MapTransform):
    """(1, H, W) instance labels under `keys` -> (3, H, W) [heatmap, height, width] under `target_key`."""

    def __init__(self, keys: KeysCollection, target_key: str = "target", size_scale: float = 384.0,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.target_key, self.size_scale = target_key, float(size_scale)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = np.asarray(torch.as_tensor(d[key]).cpu())[0]
            d[self.target_key] = targets_from_boxes(labels_to_boxes(labels), labels.shape, self.size_scale)
        return d
