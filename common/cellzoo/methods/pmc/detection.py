"""CellCentroidFormer's detection loss and its validation metrics inside MONAI engines.

- `CentroidLoss`: Huber(heatmap) + 0.5 Huber(height) + 0.5 Huber(width) (paper eq. 8-9, delta 1).
- `BoxAPMetric`: COCO box AP (0.5:0.95) of the decoded boxes against the boxes of the true masks, per
  image, through `cellzoo.metrics.coco_evaluate` (iou_type bbox); the validation key metric, optionally
  at the decoding threshold that scores best on the validation images (`DecodingThreshold` saves it).
- `HeatmapIoUMetric`: mean over {background, centroid blobs} of the IoU between the predicted and the
  true heatmap, both thresholded at the decoding threshold (paper eq. 7).

Both metrics take (3, H, W) maps and (1, H, W) instance labels, the pair the validation engines hold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import convert_to_numpy
from torch import nn
from torch.nn import functional as F

from cellzoo.methods.pmc.decode import decode_boxes
from cellzoo.methods.pmc.targets import box_heatmap, labels_to_boxes
from cellzoo.metrics import coco_evaluate
from cellzoo.metrics.engine import PerImageMeanMetric

logger = logging.getLogger(__name__)

__all__ = ["BoxAPMetric", "CentroidLoss", "DecodingThreshold", "HeatmapIoUMetric", "box_ap", "boxes_to_coco_gt",
           "heatmap_miou", "saved_threshold"]


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
    """Per-image COCO box AP (or `name`: AP50, APs ...) of decoded maps against the boxes of the masks.

    With `calibrate` (candidate decoding thresholds), every image is decoded at each candidate and the
    metric is the mean AP at the candidate that scores best over the validation images; that threshold is
    kept in `threshold` (and saved with the best model by `DecodingThreshold`), so decoding is chosen on
    validation data, never on test items. A network early in training under-shoots the targets' peaks,
    and a fixed threshold would then find no cell at all. When no heatmap pixel of any image reaches the
    lowest candidate, a warning says so (no cell can be detected).
    """

    def __init__(self, threshold: float = 0.75, size_scale: float = 384.0, name: str = "AP",
                 calibrate: Sequence[float] | None = None):
        super().__init__()
        self.threshold, self.size_scale, self.name = float(threshold), float(size_scale), name
        self.candidates = tuple(float(t) for t in calibrate) if calibrate else (self.threshold,)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # one row per image: the AP at each candidate, then the image's highest heatmap value
        pairs = [(convert_to_numpy(pred), convert_to_numpy(gt)) for pred, gt in zip(y_pred, y)]
        rows = [[*self._scores(pred, gt), float(pred[0].max())] for pred, gt in pairs]
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, len(self.candidates) + 1)

    def _scores(self, pred: np.ndarray, gt: np.ndarray) -> list[float]:
        true_boxes = labels_to_boxes(gt[0])
        if not len(true_boxes):
            return [math.nan] * len(self.candidates)
        scores = []
        for threshold in self.candidates:
            boxes, confidences = decode_boxes(pred, threshold, self.size_scale)
            value = box_ap(boxes, confidences, true_boxes)[self.name]
            scores.append(math.nan if value < 0 else value)  # -1: undefined (e.g. no cell of that size)
        return scores

    def aggregate(self) -> torch.Tensor:
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            return torch.tensor(0.0)
        per_candidate = torch.nan_to_num(buffer[:, :-1].float().nanmean(dim=0), nan=0.0)
        best = int(torch.argmax(per_candidate))  # the first of equals: the lowest threshold
        if len(self.candidates) > 1:
            self.threshold = self.candidates[best]
        peak = float(buffer[:, -1].max())
        if peak < min(self.candidates):
            logger.warning("no cell detected on the validation images: the highest heatmap value is %.3f, below "
                           "every decoding threshold tried (lowest %.2f); the network has not learnt yet", peak,
                           min(self.candidates))
        return per_candidate[best]


class DecodingThreshold:
    """The decoding threshold chosen on validation (`BoxAPMetric.threshold`), saved with the best model under
    the checkpoint key "decoding" (a state-dict object for MONAI's CheckpointSaver); inference reads it back
    with `saved_threshold`."""

    def __init__(self, metric: BoxAPMetric):
        self.metric = metric

    def state_dict(self) -> dict:
        return {"threshold": self.metric.threshold}

    def load_state_dict(self, state: dict) -> None:
        self.metric.threshold = float(state["threshold"])


def saved_threshold(checkpoints: Sequence[str], default: float = 0.75) -> float:
    """The decoding threshold for inference: the mean of those the checkpoints were saved with (the
    validation-calibrated one), else `default` (checkpoints without one: ONNX graphs, older files)."""
    found = []
    for path in checkpoints:
        if not str(path).endswith(".pt") or not Path(path).is_file():
            continue
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(saved, dict) and isinstance(saved.get("decoding"), dict) and "threshold" in saved["decoding"]:
            found.append(float(saved["decoding"]["threshold"]))
    if not found:
        logger.info("decoding threshold %.2f (the checkpoints carry no calibrated one)", default)
        return float(default)
    value = float(np.mean(found))
    logger.info("decoding threshold %.2f, chosen on the validation images when the model was trained", value)
    return value


class HeatmapIoUMetric(PerImageMeanMetric):
    """Per-image heatmap mIoU of the predicted maps against the heatmap rendered from the masks."""

    def __init__(self, threshold: float = 0.75):
        super().__init__()
        self.threshold = float(threshold)

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        true_heatmap = box_heatmap(labels_to_boxes(gt[0]), gt.shape[1:])
        return heatmap_miou(pred[0], true_heatmap, self.threshold)
