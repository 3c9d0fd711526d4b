"""Image-to-image metrics for label-free prediction, following the LightMyCells challenge."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial.distance import cosine as cosine_distance
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cellzoo.errors import InputError

METRIC_KEYS = ("mae", "mse", "psnr", "ssim", "pcc", "euclidean", "cosine")


def percentile_normalize(x: np.ndarray, low: float = 2.0, high: float = 99.8, eps: float = 1e-20) -> np.ndarray:
    """(x - p_low) / (p_high - p_low + eps) in float64, percentiles over the whole image."""
    x = np.asarray(x, dtype=np.float64)
    p_low, p_high = np.percentile(x, [low, high])
    return (x - p_low) / (p_high - p_low + eps)


def _check_images(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    for name, arr in (("pred", pred), ("gt", gt)):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InputError(f"{name}: expected a real-valued image, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name}: image contains NaN or inf")
    if pred.shape != gt.shape:
        raise InputError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    if pred.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D grayscale image, got {pred.ndim}D")
    return pred.astype(np.float64), gt.astype(np.float64)


def _ssim_window(shape: tuple[int, ...]) -> int:
    # skimage needs an odd window no larger than any axis; thin 3D stacks get a smaller one than 7.
    win = min(7, min(shape))
    win -= 1 - win % 2
    if win < 3:
        raise InputError(f"image of shape {shape} is too small for SSIM (every axis needs >= 3 px)")
    return win


def _pcc(a: np.ndarray, b: np.ndarray) -> float:
    # A constant image has no defined correlation: report NaN without a warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def image_metrics(pred: np.ndarray, gt: np.ndarray, normalize: bool = True, data_range: float | None = None,
                  names: Iterable[str] = METRIC_KEYS) -> dict:
    """mae, mse, psnr, ssim, pcc, euclidean and cosine distance between a predicted and a target image.

    `names` picks the metrics to compute (SSIM costs more than all the others together).
    """
    names = tuple(names)
    unknown = sorted(set(names) - set(METRIC_KEYS))
    if unknown:
        raise ValueError(f"unknown image metric(s) {unknown}; choose from {METRIC_KEYS}")
    pred, gt = _check_images(pred, gt)
    if normalize:
        pred, gt = percentile_normalize(pred), percentile_normalize(gt)
    dr = float(gt.max() - gt.min()) if data_range is None else float(data_range)
    diff = pred - gt
    compute = {
        "mae": lambda: float(np.mean(np.abs(diff))),
        "mse": lambda: float(np.mean(diff**2)),
        "psnr": lambda: _psnr(gt, pred, dr),
        "ssim": lambda: float(structural_similarity(gt, pred, data_range=dr, win_size=_ssim_window(gt.shape))),
        "pcc": lambda: _pcc(pred, gt),
        "euclidean": lambda: float(np.linalg.norm(diff.ravel())),
        "cosine": lambda: float(cosine_distance(pred.ravel(), gt.ravel())),
    }
    return {name: compute[name]() for name in names}


def _psnr(gt: np.ndarray, pred: np.ndarray, data_range: float) -> float:
    with np.errstate(divide="ignore"):  # identical images give psnr = inf, not a warning
        return float(peak_signal_noise_ratio(gt, pred, data_range=data_range))


def mean_image_metrics(pairs: Iterable[tuple[np.ndarray, np.ndarray]], normalize: bool = True) -> dict:
    """Mean of image_metrics over (pred, gt) pairs, plus "n_images"."""
    per_image = [image_metrics(p, g, normalize=normalize) for p, g in pairs]
    if not per_image:
        raise InputError("mean_image_metrics got no (pred, gt) pairs")
    out = {k: float(np.mean([m[k] for m in per_image])) for k in METRIC_KEYS}
    out["n_images"] = len(per_image)
    return out
