"""CUPre's data chains as MONAI transforms: COCO annotations -> instance masks, crops and flips that move the
masks with the image (MONAI's own spatial transforms, the masks stacked as channels), masks -> detector
targets, and the inference / MoCo chains.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CopyItemsd,
    DeleteItemsd,
    Lambdad,
    MapTransform,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from cellzoo.engines.contrastive import TwoViewsd, moco_view_transforms
from cellzoo.io.coco import annotation_to_mask
from cellzoo.transforms import LoadImagesd, to_three_channels

__all__ = ["CocoMasksd", "MasksToTargetd", "cell_view_transforms", "detection_predict_transforms",
           "detection_train_transforms", "detection_valid_transforms", "masks_to_boxes"]


class CocoMasksd(MapTransform):
    """COCO annotations (`annotations` key) -> "masks" (N, H, W) uint8 and "classes" (N,) int64.

    Class k is the position of the annotation's category in `category_ids` (1-based); with
    `merge_categories` every annotation is class 1 ("cell"). Crowd annotations are left out.
    """

    def __init__(self, keys: KeysCollection = "annotations", category_ids: Sequence[int] | None = None,
                 merge_categories: bool = False, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.index = {int(c): k for k, c in enumerate(category_ids or [], start=1)}
        self.merge = bool(merge_categories)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        height, width = int(d["height"]), int(d["width"])
        for key in self.key_iterator(d):
            annotations = [a for a in d[key] if not a.get("iscrowd", 0)]
            masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
            for i, annotation in enumerate(annotations):
                masks[i] = annotation_to_mask(annotation, height, width)
            d["masks"] = masks
            d["classes"] = np.array([1 if self.merge else self.index.get(int(a.get("category_id", 1)), 1)
                                     for a in annotations], dtype=np.int64)
            del d[key]  # variable-length records cannot be batched; the masks hold what training needs
        return d


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) float32 xyxy boxes enclosing each (H, W) mask, x2/y2 exclusive (pixel edges)."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
        y = np.where(rows)[0]
        x = np.where(cols)[0]
        if len(y):
            boxes[i] = (x[0], y[0], x[-1] + 1, y[-1] + 1)
    return boxes


class MasksToTargetd(MapTransform):
    """After the spatial transforms: drop instances cut below `min_area` pixels, then "boxes", "labels" and
    "masks" as the detector's target tensors."""

    def __init__(self, keys: KeysCollection = "masks", min_area: int = 4, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.min_area = int(min_area)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            masks = np.asarray(torch.as_tensor(d[key]).cpu()).astype(np.uint8)
            keep = masks.reshape(len(masks), -1).sum(1) >= self.min_area
            masks = masks[keep]
            d[key] = torch.from_numpy(masks)
            d["boxes"] = torch.from_numpy(masks_to_boxes(masks))
            d["labels"] = torch.as_tensor(np.asarray(d.pop("classes"))[keep], dtype=torch.int64)
        return d


def _normalise(keys: KeysCollection) -> list:
    """Read-in image -> float [0, 1] by its 1st / 99.8th percentiles -> 3 channels (the backbone's input)."""
    return [ScaleIntensityRangePercentilesd(keys, lower=1, upper=99.8, b_min=0.0, b_max=1.0, clip=True),
            Lambdad(keys, to_three_channels)]


def detection_train_transforms(roi_size: int = 512, category_ids: Sequence[int] | None = None,
                               merge_categories: bool = True, min_area: int = 4) -> Compose:
    """Training chain: read, annotations -> masks, normalise, random roi_size crop (padded when smaller),
    flips and 90-degree turns of image and masks together, intensity jitter, detector targets."""
    both = ["image", "masks"]
    return Compose([
        LoadImagesd("image"),
        CocoMasksd("annotations", category_ids, merge_categories),
        *_normalise("image"),
        SpatialPadd(both, (roi_size, roi_size)),
        RandSpatialCropd(both, (roi_size, roi_size), random_size=False),
        RandFlipd(both, prob=0.5, spatial_axis=0),
        RandFlipd(both, prob=0.5, spatial_axis=1),
        RandRotate90d(both, prob=0.5, max_k=3),
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        MasksToTargetd("masks", min_area),
    ])


def detection_valid_transforms() -> Compose:
    """Validation / evaluation chain: read and normalise the whole image; annotations stay as they are."""
    return Compose([LoadImagesd("image"), *_normalise("image")])


def detection_predict_transforms(raw_key: str = "raw") -> Compose:
    """Inference chain: read (a copy kept under `raw_key` for per-cell intensities), normalise."""
    return Compose([LoadImagesd("image"), CopyItemsd("image", names=raw_key), *_normalise("image")])


def cell_view_transforms(view_size: int = 224, context_size: int | None = None, min_scale: float = 0.2) -> Compose:
    """MoCo chain on unlabelled cell images: read, normalise, two random views "image_q" and "image_k"."""
    views = moco_view_transforms("image", view_size, context_size, min_scale)
    return Compose([LoadImagesd("image"), *_normalise("image"), TwoViewsd("image", views), DeleteItemsd("image")])
