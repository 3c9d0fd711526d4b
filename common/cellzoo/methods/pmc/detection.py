"""CellCentroidFormer's detection loss and its validation metrics inside MONAI engines.

- `CentroidLoss`: Huber(heatmap) + 0.5 Huber(height) + 0.5 Huber(width) (paper eq. 8-9, delta 1).
- `BoxAPMetric`: COCO box AP (0.5:0.95) of the decoded boxes against the boxes of the true masks, per
  image, through `cellzoo.metrics.coco_evaluate` (iou_type bbox); the validation key metric.
- `HeatmapIoUMetric`: mean over {background, centroid blobs} of the IoU between the predicted and the
  true heatmap, both thresholded at the decoding threshold (paper eq. 7).

Both metrics take (3, H, W) maps and (1, H, W) instance labels, the pair the validation engines hold.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cellzoo.methods.pmc.decode import decode_boxes
from cellzoo.methods.pmc.targets import box_heatmap, labels_to_boxes
from cellzoo.metrics import coco_evaluate
from cellzoo.metrics.engine import PerImageMeanMetric

__all__ = ["BoxAPMetric", "CentroidLoss", "HeatmapIoUMetric", "box_ap", "boxes_to_coco_gt", "heatmap_miou"]


class CentroidLoss(nn.Module):
    """Weighted Huber losses of the [heatmap, height, width] channels (weights 1, 0.5, 0.5)."""

    def __init__(self, weights=(1.0, 0.5, 0.5), delta: float = 1.0):
        super().__init__()
        self.weights, self.delta = tuple(float(w) for w in weights), float(delta)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * F.huber_loss(prediction[:, c], target[:, c], delta=self.delta)
                   for c, w in enumerate(self.weights))


def boxes_to_coco_gt(boxes_per_image: list[np.ndarray]) -> dict:
    """A COCO ground-truth dict of box-only annotations (area = box area), image ids 1..n."""
    from cellzoo.io.coco import boxes_to_coco

    images, annotations = [], []
    for image_id, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": image_id})
        annotations += boxes_to_coco(boxes, image_id, start_ann_id=len(annotations) + 1)
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cell"}]}


def box_ap(pred_boxes: np.ndarray, scores: np.ndarray, true_boxes: np.ndarray) -> dict:
    """COCO bbox metrics of one image's detections (see `cellzoo.metrics.coco_evaluate`)."""
    from cellzoo.io.coco import boxes_to_coco

    detections = boxes_to_coco(pred_boxes, 1, scores=scores)
    return coco_evaluate(boxes_to_coco_gt([true_boxes]), detections, iou_type="bbox")


def heatmap_miou(pred_heatmap: np.ndarray, true_heatmap: np.ndarray, threshold: float = 0.75) -> float:
    """Mean IoU of the two classes (background, blobs) of two heatmaps thresholded at `threshold`."""
    pred, true = np.asarray(pred_heatmap) > threshold, np.asarray(true_heatmap) > threshold
    ious = []
    for a, b in ((pred, true), (~pred, ~true)):
        union = np.logical_or(a, b).sum()
        if union:
            ious.append(np.logical_and(a, b).sum() / union)
    return float(np.mean(ious)) if ious else math.nan


class BoxAPMetric(PerImageMeanMetric):
    """Per-image COCO box AP (or `name`: AP50, APs ...) of decoded maps against the boxes of the masks."""

    def __init__(self, threshold: float = 0.75, size_scale: float = 384.0, name: str = "AP"):
        super().__init__()
        self.threshold, self.size_scale, self.name = float(threshold), float(size_scale), name

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        true_boxes = labels_to_boxes(gt[0])
        boxes, scores = decode_boxes(pred, self.threshold, self.size_scale)
        if not len(true_boxes):
            return math.nan
        value = box_ap(boxes, scores, true_boxes)[self.name]
        return math.nan if value < 0 else value  # -1: undefined (e.g. no cell of that size)


class HeatmapIoUMetric(PerImageMeanMetric):
    """Per-image heatmap mIoU of the predicted maps against the heatmap rendered from the masks."""

    def __init__(self, threshold: float = 0.75):
        super().__init__()
        self.threshold = float(threshold)

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        true_heatmap = box_heatmap(labels_to_boxes(gt[0]), gt.shape[1:])
        return heatmap_miou(pred[0], true_heatmap, self.threshold)
