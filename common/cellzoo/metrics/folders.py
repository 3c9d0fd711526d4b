"""Scoring folders and files: pair prediction and ground-truth files by stem, then compute the metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io import (
    check_finite,
    check_same_shape,
    load_coco_json,
    load_json,
    pair_by_stem,
    read_image,
    read_labels,
)
from cellzoo.metrics.coco import coco_evaluate, label_pairs_coco_ap
from cellzoo.metrics.image import mean_image_metrics
from cellzoo.metrics.instance import evaluate_instances
from cellzoo.metrics.report import write_metrics

logger = logging.getLogger(__name__)


def read_intensity_file(path: Path) -> np.ndarray:
    """Read an image as float64 with singleton axes squeezed; reject NaN/inf."""
    array, _ = read_image(path)
    array = np.squeeze(array).astype(np.float64)
    if array.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D image, got shape {array.shape}", path)
    check_finite(array, path)
    return array


def read_instance_pairs(pred_dir, gt_dir) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, prediction) label images paired by stem, checked for type and shape."""
    pairs = []
    for _, pred_path, gt_path in pair_by_stem(pred_dir, gt_dir):
        gt = read_labels(gt_path)
        pred = read_labels(pred_path, allow_empty=True)  # a model may rightly find no cell
        check_same_shape(pred, gt, pred_path, gt_path)
        pairs.append((gt, pred))
    return pairs


def evaluate_instance_folders(pred_dir, gt_dir, iou: float = 0.5, border_margin: int = 0) -> dict:
    """F1/precision/recall at `iou` and AP over 0.5..0.95 for label images paired by stem."""
    return evaluate_instances(read_instance_pairs(pred_dir, gt_dir), iou=iou, border_margin=border_margin)


def evaluate_image_folders(pred_dir, gt_dir, normalize: bool = True) -> dict:
    """Image-to-image metrics (LightMyCells normalisation) for images paired by stem."""
    pairs = []
    for _, pred_path, gt_path in pair_by_stem(pred_dir, gt_dir):
        pred, gt = read_intensity_file(pred_path), read_intensity_file(gt_path)
        check_same_shape(pred, gt, pred_path, gt_path)
        pairs.append((pred, gt))
    return mean_image_metrics(pairs, normalize=normalize)


def evaluate_coco_files(pred_json, gt_json, iou_type: str = "segm", protocol: str = "coco") -> dict:
    """COCO AP summary for a results JSON against a ground-truth JSON."""
    gt = load_coco_json(gt_json)
    pred = load_json(pred_json)
    if isinstance(pred, dict) and "annotations" in pred:  # a full COCO file given as predictions
        pred = pred["annotations"]
    if not isinstance(pred, list):
        raise InputError("predictions must be a COCO results list (or a COCO file with 'annotations')", pred_json)
    return coco_evaluate(gt, pred, iou_type=iou_type, protocol=protocol)


def instance_report(pairs: Sequence[tuple[np.ndarray, np.ndarray]], iou: float = 0.5, border_margin: int = 0,
                    extra_ious: Sequence[float] = (0.6, 0.7, 0.8, 0.9)) -> dict:
    """Scores of (ground truth, prediction) label images: F1 at `iou` (and at `extra_ious`) and AP over
    0.5..0.95 with the border exclusion, plus COCO box and mask AP (`box_ap`, `mask_ap`, and at IoU 0.5)
    over every cell, the border included, as detectors are scored; label images carry no confidence, so
    every instance scores 1.0 there (see `label_pairs_coco_ap`)."""
    report = evaluate_instances(pairs, iou=iou, border_margin=border_margin)
    report["border_margin"] = border_margin
    report["f1_at"] = {f"{t:.2f}": evaluate_instances(pairs, iou=t, border_margin=border_margin)["f1"] for t in extra_ious}
    report.update(label_pairs_coco_ap(pairs))
    return report


def write_instance_report(pred_dir, gt_dir, out_json, iou: float = 0.5, border_margin: int = 0,
                          extra_ious: Sequence[float] = (0.6, 0.7, 0.8, 0.9)) -> dict:
    """Score label folders paired by stem (`instance_report`), write the JSON report and return it."""
    report = instance_report(read_instance_pairs(pred_dir, gt_dir), iou, border_margin, extra_ious)
    report = write_metrics(out_json, report)
    logger.info("F1@%.2f = %.4f over %d images -> %s", iou, report["f1"], report["n_images"], out_json)
    return report
