"""cellzoo metrics as MONAI cumulative metrics, for validation inside ignite/MONAI engines.

Each scores every image of a (B, C, *spatial) batch and keeps one value per image; `aggregate` is the mean
over all images seen since the last reset. Wrap them in `monai.handlers.IgniteMetricHandler`.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_numpy

from cellzoo.metrics.image import image_metrics
from cellzoo.metrics.instance import DEFAULT_AP_THRESHOLDS, average_precision, instance_scores, threshold_key


class PerImageMeanMetric(CumulativeIterationMetric):
    """A metric with one value per image, averaged over every image seen since the last reset."""

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        raise NotImplementedError

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scores = [self._score(convert_to_numpy(pred), convert_to_numpy(gt)) for pred, gt in zip(y_pred, y)]
        return torch.tensor(scores, dtype=torch.float32).reshape(-1, 1)

    def aggregate(self) -> torch.Tensor:
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            return torch.tensor(0.0)
        return buffer.float().nanmean()


class InstanceF1Metric(PerImageMeanMetric):
    """Per-image F1 at one IoU threshold between predicted and true instance label images.

    Inputs are (B, 1, *spatial) integer label images (post-processed predictions and ground truth);
    wrap it in `monai.handlers.IgniteMetricHandler` to use it as an engine's key metric.
    """

    def __init__(self, iou: float = 0.5, border_margin: int = 0):
        super().__init__()
        self.iou, self.border_margin = float(iou), int(border_margin)

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        result = instance_scores(gt[0].astype(np.int64), pred[0].astype(np.int64), (self.iou,),
                                 border_margin=self.border_margin)
        return result["thresholds"][threshold_key(self.iou)]["f1"]


class InstanceAPMetric(PerImageMeanMetric):
    """Per-image AP averaged over IoU thresholds (default 0.5:0.05:0.95), the ISL paper's cell "mAP".

    Inputs are (B, 1, *spatial) integer label images; AP = tp / (tp + fp + fn) at each threshold.
    """

    def __init__(self, iou_thresholds=DEFAULT_AP_THRESHOLDS):
        super().__init__()
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        return float(average_precision(gt[0].astype(np.int64), pred[0].astype(np.int64), self.iou_thresholds).mean())


class ImageSimilarityMetric(PerImageMeanMetric):
    """One of `cellzoo.metrics.image.image_metrics` ("pcc", "ssim", "mae", ...) per (1, *spatial) image pair.

    Images are percentile-normalised first (as `cellzoo evaluate image` does), so the metric compares
    structure, not the arbitrary intensity scale of a stain.
    """

    def __init__(self, name: str = "pcc", normalize: bool = True):
        super().__init__()
        self.name, self.normalize = name, normalize

    def _score(self, pred: np.ndarray, gt: np.ndarray) -> float:
        return image_metrics(pred[0], gt[0], normalize=self.normalize, names=(self.name,))[self.name]

