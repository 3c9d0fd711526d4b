"""Decoding CellCentroidFormer's maps to boxes (paper sec. 3.2.2, eq. 4-5), and its MONAI transform.

Blobs are the connected components of heatmap > threshold (0.75); each blob's centroid comes from its
image moments (M10 / M00, M01 / M00); height and width are read from the size maps at that centroid.
The blob's highest heatmap value is the box's score (COCO AP ranks detections by it; the paper gives
none).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from skimage.measure import label, regionprops

__all__ = ["DecodeBoxesd", "decode_boxes"]


def decode_boxes(maps: np.ndarray, threshold: float = 0.75, size_scale: float = 384.0,
                 min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) [heatmap, height, width] maps -> ((N, 4) [x, y, w, h] boxes in pixels, (N,) scores)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != 3:
        raise ValueError(f"expected (3, H, W) [heatmap, height, width] maps, got shape {maps.shape}")
    heatmap = maps[0]
    blobs = label(heatmap > threshold, connectivity=2)
    boxes, scores = [], []
    for region in regionprops(blobs, intensity_image=heatmap):
        if region.area < min_pixels:
            continue
        cy, cx = region.centroid  # = (M01 / M00, M10 / M00) of the binary blob
        row = min(max(int(cy), 0), heatmap.shape[0] - 1)
        col = min(max(int(cx), 0), heatmap.shape[1] - 1)
        height, width = maps[1, row, col] * size_scale, maps[2, row, col] * size_scale
        boxes.append((cx + 0.5 - width / 2, cy + 0.5 - height / 2, width, height))  # pixel centre at +0.5
        scores.append(float(region.intensity_max))
    return _clipped(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), heatmap.shape), np.asarray(scores, np.float64)


def _clipped(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, 4) [x, y, w, h] boxes cut to the image: a cell at the edge is seen only up to it, and COCO tools
    and viewers expect boxes inside the image."""
    corners = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    corners = np.clip(corners, 0.0, [shape[1], shape[0], shape[1], shape[0]])
    return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)


class DecodeBoxesd(MapTransform):
    """Decode the (3, H, W) maps under `keys` into `boxes` and `scores` entries (maps kept).

    Boxes are divided by `zoom` (the factor the input was resized by), so they are in the pixels of the
    image as read.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.75, size_scale: float = 384.0, zoom: float = 1.0,
                 boxes_key: str = "boxes", scores_key: str = "scores", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.threshold, self.size_scale, self.zoom = float(threshold), float(size_scale), float(zoom)
        self.boxes_key, self.scores_key = boxes_key, scores_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = np.asarray(torch.as_tensor(d[key]).detach().float().cpu())
            boxes, scores = decode_boxes(maps, self.threshold, self.size_scale)
            d[self.boxes_key], d[self.scores_key] = boxes / self.zoom, scores
        return d
