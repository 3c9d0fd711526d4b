"""ISL segmentation losses ("Learning with minimal effort"): Jaccard for nuclei (sec. 2.2), MSE + alpha * BCE
for cells (sec. 2.3, eq. 2)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DistanceMaskLoss", "JaccardLoss"]

logger = logging.getLogger(__name__)


class JaccardLoss(nn.Module):
    """Binary Jaccard loss 1 - |P*T| / (|P| + |T| - |P*T|), pooled over the batch (smp's JaccardLoss).

    The paper trains both nucleus models with "Jaccard loss" (sec. 2.2) and builds them with smp (ref. 16),
    so smp's implementation is used. Both nucleus models end in a sigmoid (plain or ``ShiftedSigmoid``), so
    predictions are probabilities and ``from_logits`` defaults to False. smp scores a batch without any
    foreground pixel as 0 (no gradient), so empty crops do not push the prediction anywhere.
    """

    def __init__(self, from_logits: bool = False, smooth: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__()
        # Imported here so that importing cellzoo does not import smp (slow) unless the loss is built.
        from segmentation_models_pytorch.losses import JaccardLoss as SmpJaccardLoss

        self.loss = SmpJaccardLoss(mode="binary", from_logits=from_logits, smooth=smooth, eps=eps)

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y_pred (B, 1, H, W) probabilities (or logits), y (B, 1, H, W) binary mask."""
        return self.loss(y_pred, (y > 0).to(y_pred.dtype))


class DistanceMaskLoss(nn.Module):
    """MSE(distance) + alpha * BCEWithLogits(mask), eq. 2 of the ISL paper (alpha = 2000, sec. 2.3).

    ``y_pred`` is the cell network's (``isl_network("cells")``) (B, 2, H, W) = [distance, mask logit]; ``y`` is the (B, 2, H, W)
    [distance, mask] target of ``LabelsToDistanced``. The paper sets alpha to "the initial ratio between
    MSELoss and BCEWithLogitsLoss" (2000 on its data: pixel distances in large cells). ``alpha="initial"``
    applies that rule to the data at hand: alpha is the MSE/BCE ratio of the first batch, then fixed, so
    both terms start equal whatever the cell size (with small cells a fixed 2000 lets the mask term
    swamp the distance term).
    """

    def __init__(self, alpha: float | str = 2000.0) -> None:
        super().__init__()
        if alpha != "initial" and not float(alpha) >= 0:
            raise ValueError(f"alpha must be a number >= 0 or 'initial', got {alpha!r}")
        self.alpha = None if alpha == "initial" else float(alpha)

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y_pred.ndim != 4 or y_pred.shape[1] != 2 or y_pred.shape != y.shape:
            raise ValueError(f"prediction {tuple(y_pred.shape)} and target {tuple(y.shape)} must both be (B, 2, H, W)")
        # fp32 difference: under fp16 autocast the prediction is half precision, and a distance target cast
        # down to it loses its fine steps before they are compared
        mse = F.mse_loss(y_pred[:, 0].float(), y[:, 0].float())
        bce = F.binary_cross_entropy_with_logits(y_pred[:, 1], (y[:, 1] > 0.5).to(y_pred.dtype))
        if self.alpha is None:
            self.alpha = float(mse.detach() / bce.detach().clamp_min(1e-8))
            logger.info("DistanceMaskLoss: alpha set to the initial MSE/BCE ratio, %.4g", self.alpha)
        return mse + self.alpha * bce
