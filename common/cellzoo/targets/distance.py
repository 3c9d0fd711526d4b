"""Per-cell distance-map targets (the ISL cell task: "Learning with minimal effort", sec. 2.3, Fig. 4d; after
Naylor et al.'s nucleus distance maps)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage as ndi

__all__ = ["NORMALIZE_MODES", "LabelsToDistanced", "labels_to_distance"]

NORMALIZE_MODES = (None, "instance")


def labels_to_distance(labels: np.ndarray, normalize: str | None = None) -> np.ndarray:
    """Float32 map: in each instance, the Euclidean distance (px) to the nearest pixel outside it; 0 on background.

    The distance is taken per instance, so a touching neighbour counts as outside: pixels on a cell-cell
    contact get 1, like those on a cell-background edge, and each cell keeps its own peak. The image border
    is not an edge (a cut cell keeps the values it would have in the full image as far as visible).

    ``normalize=None`` (default) keeps pixel units, as the paper does: its h-maxima step uses h = 10 on this
    map and its alpha = 2000 is "the initial ratio between MSELoss and BCEWithLogitsLoss" (sec. 2.3), both
    only sensible for pixel distances. ``"instance"`` divides each cell by its own maximum (peak = 1).
    """
    labels = np.asarray(labels)
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    out = np.zeros(labels.shape, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        # A 1-px margin around the bounding box is outside the cell, so the EDT of the crop is exact.
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, labels.shape))
        cell = labels[box] == index
        dist = ndi.distance_transform_edt(cell)
        if normalize == "instance":
            dist = dist / dist.max()
        out[box][cell] = dist[cell]
    return out


class LabelsToDistanced(MapTransform):
    """Instance labels (H, W) or (1, H, W) -> distance (1, H, W), mask (1, H, W) and target (2, H, W) = [distance, mask].

    The target feeds ``cellzoo.methods.isl.DistanceMaskLoss``; set any output key to None to skip it. The
    label itself is kept. One label key only, since all keys write the same outputs.
    """

    def __init__(
        self,
        keys: Hashable = "label",
        distance_key: str | None = "distance",
        mask_key: str | None = "mask",
        target_key: str | None = "target",
        normalize: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LabelsToDistanced takes one label key, got {self.keys}")
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        self.outputs = {"distance": distance_key, "mask": mask_key, "target": target_key}
        self.normalize = normalize

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            plane = convert_to_numpy(label)
            plane = plane[0] if plane.ndim == 3 and plane.shape[0] == 1 else plane
            distance = labels_to_distance(plane, self.normalize)[None]
            mask = (plane > 0).astype(np.float32)[None]
            arrays = {"distance": distance, "mask": mask, "target": np.concatenate([distance, mask])}
            for name, out_key in self.outputs.items():
                if out_key is not None:
                    d[out_key] = convert_to_dst_type(arrays[name], label, dtype=np.float32)[0]
        return d
