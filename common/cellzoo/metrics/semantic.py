"""Semantic-segmentation overlap metrics: IoU and Dice for binary masks and integer class maps."""

from __future__ import annotations

import numpy as np

from cellzoo.errors import InputError
from cellzoo.metrics.instance import check_labels


def _binary(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: binary mask must be numeric without NaN/inf")
    if not np.all((arr == 0) | (arr == 1)):
        # Refuse probability maps instead of guessing a threshold.
        raise InputError(f"{name}: binary mask must contain only 0 and 1")
    return arr.astype(bool)


def _binary_pair(pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _binary(pred_mask, "pred_mask"), _binary(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise InputError(f"pred_mask shape {pred.shape} differs from gt_mask shape {gt.shape}")
    return pred, gt


def iou_score(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Jaccard index |P∩G| / |P∪G| of two binary masks; 1.0 when both are empty."""
    pred, gt = _binary_pair(pred_mask, gt_mask)
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else 1.0


def dice_score(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Dice coefficient 2|P∩G| / (|P|+|G|) of two binary masks; 1.0 when both are empty."""
    pred, gt = _binary_pair(pred_mask, gt_mask)
    total = np.count_nonzero(pred) + np.count_nonzero(gt)
    return float(2 * np.count_nonzero(pred & gt) / total) if total else 1.0


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts C[g, p] of gt class g predicted as class p."""
    codes = gt.ravel().astype(np.int64) * num_classes + pred.ravel()
    return np.bincount(codes, minlength=num_classes**2).reshape(num_classes, num_classes)


def _nanmean(values: np.ndarray) -> float:
    return float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else float("nan")


def semantic_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int | None = None) -> dict:
    """Per-class and mean IoU/Dice of integer class maps; a class absent from both maps is NaN and left out of means."""
    pred, gt = check_labels(pred, "pred"), check_labels(gt, "gt")
    if pred.shape != gt.shape:
        raise InputError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    top = int(max(pred.max(initial=0), gt.max(initial=0))) + 1
    n = top if num_classes is None else int(num_classes)
    if n < top:
        raise InputError(f"class id {top - 1} is out of range for num_classes={n}")
    cm = confusion_matrix(pred, gt, n).astype(np.float64)
    inter = np.diag(cm)
    gt_count, pred_count = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (gt_count + pred_count - inter)
        dice = 2 * inter / (gt_count + pred_count)
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "mean_iou": _nanmean(iou),
        "mean_dice": _nanmean(dice),
        "mean_iou_foreground": _nanmean(iou[1:]),
        "mean_dice_foreground": _nanmean(dice[1:]),
        "num_classes": n,
    }
