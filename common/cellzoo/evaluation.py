"""Folder-level evaluation: pair prediction and ground-truth files by stem, then score them."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io import check_finite, check_same_shape, read_image, read_labels
from cellzoo.metrics import coco_evaluate, evaluate_instances, mean_image_metrics

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".bmp", ".jpg", ".jpeg", ".nii.gz", ".nii")
# Ground truth in the NeurIPS CellSeg layout is named <stem>_label.tiff; predictions may be too.
IGNORED_STEM_SUFFIXES = ("_label",)


def file_stem(path: Path) -> str:
    """Stem of an image file with multi-part suffixes and a trailing `_label` removed."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in IGNORED_STEM_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def list_images(folder: str | Path) -> dict[str, Path]:
    """Map stem -> path for the image files directly inside a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder not found", folder)
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            stem = file_stem(path)
            if stem in files:
                raise InputError(f"two files share the stem '{stem}': {files[stem].name}, {path.name}", folder)
            files[stem] = path
    if not files:
        raise InputError("no image files found", folder)
    return files


def pair_by_stem(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, prediction, ground truth) for every stem; unmatched stems on either side are an error."""
    pred, gt = list_images(pred_dir), list_images(gt_dir)
    only_pred, only_gt = sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(f"no prediction for {_preview(only_gt)}")
        if only_pred:
            parts.append(f"no ground truth for {_preview(only_pred)}")
        raise InputError("unmatched stems between --pred and --gt: " + "; ".join(parts), pred_dir)
    return [(stem, pred[stem], gt[stem]) for stem in sorted(gt)]


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


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
    gt = _load_json(gt_json)
    pred = _load_json(pred_json)
    if isinstance(pred, dict) and "annotations" in pred:  # a full COCO file given as predictions
        pred = pred["annotations"]
    if not isinstance(pred, list):
        raise InputError("predictions must be a COCO results list (or a COCO file with 'annotations')", pred_json)
    return coco_evaluate(gt, pred, iou_type=iou_type, protocol=protocol)


def _load_json(path) -> dict | list:
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not valid JSON ({err})", path) from err


def write_instance_report(pred_dir, gt_dir, out_json, iou: float = 0.5, border_margin: int = 0,
                          extra_ious: Sequence[float] = (0.6, 0.7, 0.8, 0.9)) -> dict:
    """Score label folders at `iou` (plus F1 at `extra_ious`), write the JSON report and return it."""
    pairs = read_instance_pairs(pred_dir, gt_dir)
    report = evaluate_instances(pairs, iou=iou, border_margin=border_margin)
    report["border_margin"] = border_margin
    report["f1_at"] = {f"{t:.2f}": evaluate_instances(pairs, iou=t, border_margin=border_margin)["f1"] for t in extra_ious}
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(report, indent=2) + "\n")
    logger.info("F1@%.2f = %.4f over %d images -> %s", iou, report["f1"], report["n_images"], out_json)
    return report
