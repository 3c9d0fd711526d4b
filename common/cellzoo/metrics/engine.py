"""Instance metrics as MONAI cumulative metrics, for validation inside ignite/MONAI engines."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from cellzoo.metrics.instance import instance_scores, threshold_key


class InstanceF1Metric(CumulativeIterationMetric):
    """Per-image F1 at one IoU threshold between predicted and true instance label images.

    Inputs are (B, 1, *spatial) integer label images (post-processed predictions and ground truth);
    wrap it in `monai.handlers.IgniteMetricHandler` to use it as an engine's key metric.
    """

    def __init__(self, iou: float = 0.5, border_margin: int = 0):
        super().__init__()
        self.iou, self.border_margin = float(iou), int(border_margin)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scores = []
        for pred, gt in zip(y_pred, y):
            pred_np = np.asarray(torch.as_tensor(pred).detach().cpu()[0]).astype(np.int64)
            gt_np = np.asarray(torch.as_tensor(gt).detach().cpu()[0]).astype(np.int64)
            result = instance_scores(gt_np, pred_np, (self.iou,), border_margin=self.border_margin)
            scores.append(result["thresholds"][threshold_key(self.iou)]["f1"])
        return torch.tensor(scores, dtype=torch.float32).reshape(-1, 1)

    def aggregate(self) -> torch.Tensor:
        """Mean F1 over every image seen since the last reset."""
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            return torch.tensor(0.0)
        return buffer.float().mean()
