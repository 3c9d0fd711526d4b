"""MEDIAR loss: BCE on cell probability + weighted MSE on scaled flows (MEDIAR eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MEDIARLoss"]


def _masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over all elements, or over the elements where `valid` (broadcast over channels) is set."""
    if valid is None:
        return values.mean()
    weight = valid.expand_as(values).to(values.dtype)
    # clamp keeps an all-ignored batch at loss 0 instead of 0/0.
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


class MEDIARLoss(nn.Module):
    """BCEWithLogits(cellprob, label > 0) + flow_weight * MSE(flows, flow_scale * target_flows).

    `y_pred` is the MEDIARFormer output (B, 3, H, W) = [flow_y, flow_x, cellprob logits]. `y` is the
    (B, 3, H, W) target [flow_y, flow_x, cell] of `mediar_train_transforms` (`stack_target`), with an
    optional 4th ignore channel (1 = ignore, from BoundaryExclusiond(ignore_key=...)); it plugs into
    MONAI's SupervisedTrainer as loss_function(y_pred, y). The reference code thresholds the cell
    channel at 0.5; so does this.
    """

    def __init__(self, flow_weight: float = 0.5, flow_scale: float = 5.0) -> None:
        super().__init__()
        self.flow_weight = flow_weight
        self.flow_scale = flow_scale

    @staticmethod
    def split_target(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return (flows (B,2,H,W), cell mask (B,1,H,W) as float, ignore mask or None)."""
        if y.ndim != 4 or y.shape[1] not in (3, 4):
            raise ValueError(f"target must be (B, 3 or 4, H, W), got {tuple(y.shape)}")
        ignore = y[:, 3:4] > 0.5 if y.shape[1] == 4 else None
        return y[:, :2].float(), (y[:, 2:3] > 0.5).float(), ignore

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss for a batch."""
        flows, cell, ignore = self.split_target(y)
        if y_pred.shape[1] != 3 or y_pred.shape[-2:] != flows.shape[-2:]:
            raise ValueError(f"prediction {tuple(y_pred.shape)} does not match target flows {tuple(flows.shape)}")
        valid = None if ignore is None else ~ignore
        bce = F.binary_cross_entropy_with_logits(y_pred[:, 2:3], cell, reduction="none")
        mse = F.mse_loss(y_pred[:, :2], self.flow_scale * flows, reduction="none")
        return _masked_mean(bce, valid) + self.flow_weight * _masked_mean(mse, valid)
