"""COCO-style AP/AR through pycocotools, with the standard COCO and the LIVECell evaluation presets."""

from __future__ import annotations

import contextlib
import math
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellzoo.errors import InputError
from cellzoo.io.coco import label_image_to_coco, load_coco_json, to_rle
from cellzoo.io.files import load_json
from cellzoo.metrics.instance import check_labels

PROTOCOLS: dict[str, dict] = {
    "coco": dict(
        max_dets=[1, 10, 100],
        area_ranges={
            "all": [0, 1e10],
            "small": [0, 32**2],
            "medium": [32**2, 96**2],
            "large": [96**2, 1e10],
        },
    ),
    # LIVECell (Edlund et al. 2021): up to 2000 cells per image and size classes for cells, not objects.
    "livecell": dict(
        max_dets=[100, 500, 2000],
        area_ranges={
            "all": [0, 1e10],
            "small": [0, 18**2],
            "medium": [18**2, 31**2],
            "large": [31**2, 1e10],
        },
    ),
}

_SIZE_KEYS = {"small": "APs", "medium": "APm", "large": "APl"}


def _quiet():
    """pycocotools prints progress to stdout; keep it out of CLI output."""
    return contextlib.redirect_stdout(io.StringIO())


def _gt_coco(gt) -> COCO:
    dataset = load_coco_json(gt)
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    for ann in coco.dataset["annotations"]:
        if "area" not in ann or "bbox" not in ann:
            rle = coco.annToRLE(ann)
            ann.setdefault("area", float(mask_utils.area(rle)))
            ann.setdefault("bbox", mask_utils.toBbox(rle).tolist())
    return coco


def _check_dets(dets: list[dict], gt: COCO, iou_type: str) -> None:
    need = {"image_id", "category_id", "score"} | ({"segmentation"} if iou_type == "segm" else set())
    for i, d in enumerate(dets):
        missing = need - set(d)
        if missing:
            raise InputError(f"COCO result {i} lacks {sorted(missing)}")
        if iou_type == "bbox" and "bbox" not in d and "segmentation" not in d:
            raise InputError(f"COCO result {i} has neither 'bbox' nor 'segmentation'")
        if d["image_id"] not in gt.imgs:
            raise InputError(f"COCO result {i} refers to image_id {d['image_id']} absent from the ground truth")
        if not _is_number(d["score"]):
            raise InputError(f"COCO result {i}: score must be a finite number, got {d['score']!r}")
        box = d.get("bbox")
        if box is not None and not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))
                                    and box[2] >= 0 and box[3] >= 0):
            raise InputError(f"COCO result {i}: bbox must be [x, y, width, height] in numbers, got {box!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_rle(dets: list[dict], gt: COCO) -> None:
    """Polygon segmentations as RLE: pycocotools' loadRes takes results in RLE only."""
    for i, d in enumerate(dets):
        image = gt.imgs[d["image_id"]]
        rle = to_rle(d["segmentation"], image["height"], image["width"], ann_id=f"result {i}")
        if rle is None:
            raise InputError(f"COCO result {i} has an empty segmentation")
        d["segmentation"] = rle


def _results_coco(gt: COCO, predictions, iou_type: str) -> COCO:
    loaded = load_json(predictions) if isinstance(predictions, (str, Path)) else predictions
    if not isinstance(loaded, list):
        raise InputError("COCO results must be a list of detections", predictions if isinstance(predictions, (str, Path)) else None)
    dets = [dict(d) for d in loaded]
    _check_dets(dets, gt, iou_type)
    if iou_type == "segm":
        _as_rle(dets, gt)
        # loadRes takes 'area' from the box when a box is present; detectron2 drops it for the same reason.
        for d in dets:
            d.pop("bbox", None)
    else:
        for d in dets:
            if "bbox" not in d:  # from the mask, polygon or RLE
                image = gt.imgs[d["image_id"]]
                d["bbox"] = mask_utils.toBbox(to_rle(d["segmentation"], image["height"], image["width"])).tolist()
    if dets:
        with _quiet():
            return gt.loadRes(dets)
    # loadRes cannot take an empty list; an empty result set simply scores 0 wherever gt exists.
    res = COCO()
    res.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
    with _quiet():
        res.createIndex()
    return res


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summary(ev: COCOeval) -> dict:
    """AP/AR at the largest maxDets, read straight from the accumulated arrays."""
    # Written by hand instead of COCOeval.summarize(): summarize() hard-codes maxDets=100 for AP
    # (stats[0]) and picks maxDets by position elsewhere, so with LIVECell's [100, 500, 2000] the
    # numbers would mix detection caps. LIVECell's authors read eval['precision'] the same way.
    p = ev.params
    precision = ev.eval["precision"][..., -1]  # [T, R, K, A] at the largest maxDets
    recall = ev.eval["recall"][..., -1]  # [T, K, A]
    a_all = p.areaRngLbl.index("all")
    out = {"AP": _mean_valid(precision[..., a_all])}
    for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
        out[name] = _mean_valid(precision[np.isclose(p.iouThrs, thr)][..., a_all])
    for a, label in enumerate(p.areaRngLbl):
        if label != "all":
            out[_SIZE_KEYS.get(label, f"AP_{label}")] = _mean_valid(precision[..., a])
    out["AR"] = _mean_valid(recall[..., a_all])
    return out


def make_cocoeval(
    gt, predictions, iou_type: str = "segm", protocol: str = "coco", max_dets=None, area_ranges=None
) -> COCOeval:
    """Evaluated and accumulated COCOeval object for the given protocol (for callers needing raw arrays)."""
    if iou_type not in ("segm", "bbox"):
        raise InputError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    preset = PROTOCOLS[protocol]
    areas = dict(area_ranges or preset["area_ranges"])
    if "all" not in areas:
        raise InputError("area_ranges must contain an 'all' range")
    gt_coco = _gt_coco(gt)
    ev = COCOeval(gt_coco, _results_coco(gt_coco, predictions, iou_type), iou_type)
    ev.params.maxDets = sorted(int(m) for m in (max_dets or preset["max_dets"]))
    ev.params.areaRngLbl = list(areas)
    ev.params.areaRng = [list(map(float, r)) for r in areas.values()]
    with _quiet():
        ev.evaluate()
        ev.accumulate()
    return ev


def coco_evaluate(
    gt,
    predictions,
    iou_type: str = "segm",
    protocol: str = "coco",
    max_dets: Sequence[int] | None = None,
    area_ranges: Mapping[str, Sequence[float]] | None = None,
) -> dict:
    """COCO AP, AP50, AP75, APs, APm, APl and AR at the largest maxDets (-1 where undefined)."""
    return _summary(make_cocoeval(gt, predictions, iou_type, protocol, max_dets, area_ranges))


def _scores_for(ids: list[int], scores) -> list[float]:
    if scores is None:
        return [1.0] * len(ids)
    if isinstance(scores, Mapping):
        return [float(scores[int(i)]) for i in ids]
    scores = list(scores)
    if len(scores) != len(ids):
        raise InputError(f"got {len(scores)} scores for {len(ids)} instances")
    return [float(s) for s in scores]


def labels_to_coco_results(
    labels: np.ndarray,
    image_id: int,
    scores: Mapping[int, float] | Sequence[float] | None = None,
    category_id: int = 1,
) -> list[dict]:
    """COCO result dicts (RLE, bbox [x, y, w, h], area, score) per instance, in ascending label order.

    `scores` maps label ids to scores, or lists them in ascending-id order (default: 1.0 each).
    """
    labels = check_labels(labels)
    if labels.ndim != 2:
        raise InputError(f"COCO results need a 2D label image, got {labels.ndim}D")
    annotations = label_image_to_coco(labels, image_id, segmentation="rle", category_id=category_id)
    score_list = _scores_for([a["label"] for a in annotations], scores)
    return [{"image_id": int(image_id), "category_id": int(category_id), "segmentation": a["segmentation"],
             "bbox": [float(v) for v in a["bbox"]], "area": float(a["area"]), "score": score}
            for a, score in zip(annotations, score_list)]


def label_pairs_coco_ap(pairs: Sequence[tuple[np.ndarray, np.ndarray]], scores: Sequence | None = None,
                        protocol: str = "coco") -> dict:
    """COCO box and mask AP (and AP50) of predicted label images against true ones, all images together.

    `pairs` are (ground truth, prediction) label images; `scores` gives each prediction's per-instance scores
    (as `labels_to_coco_results` takes them). Without scores every instance scores 1.0 and pycocotools
    ranks them in label order: a segmenter that gives no confidence gets the AP of that one ranking.
    Returns box_ap, box_ap50, mask_ap, mask_ap50 (-1 where undefined: no ground-truth instance).
    """
    images, truth, results = [], [], []
    for image_id, (gt, pred) in enumerate(pairs, start=1):
        gt = check_labels(gt, "ground truth")
        images.append({"id": image_id, "height": int(gt.shape[0]), "width": int(gt.shape[1])})
        for annotation in label_image_to_coco(gt, image_id, start_ann_id=len(truth) + 1, segmentation="rle"):
            truth.append({**annotation, "iscrowd": 0})
        results += labels_to_coco_results(pred, image_id, None if scores is None else scores[image_id - 1])
    document = {"images": images, "annotations": truth, "categories": [{"id": 1, "name": "cell"}]}
    out = {}
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        summary = coco_evaluate(document, results, iou_type=iou_type, protocol=protocol)
        out[f"{prefix}_ap"], out[f"{prefix}_ap50"] = float(summary["AP"]), float(summary["AP50"])
    return out
