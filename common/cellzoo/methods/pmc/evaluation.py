"""Scoring an evaluation run: the boxes it wrote (coco/<name>.json) against the boxes of the true masks.

COCO box AP (0.5:0.95), AP50, AP75, AP small/medium/large and AR through `cellzoo.metrics.coco_evaluate`
(iou_type "bbox", COCO protocol) over all scored slices together, as pycocotools scores a data set.
Ground-truth boxes are the tight boxes of the masks, their area the box area (box-only annotations, as
the paper converts masks to boxes).
"""

from __future__ import annotations

import math
from pathlib import Path

from cellzoo.errors import InputError
from cellzoo.io import load_coco_json
from cellzoo.methods.pmc.data import stack_labels
from cellzoo.methods.pmc.detection import boxes_to_coco_gt
from cellzoo.methods.pmc.targets import labels_to_boxes
from cellzoo.metrics import coco_evaluate, write_metrics

__all__ = ["METRIC_NAMES", "detection_report"]

# metrics.json name -> cellzoo.metrics.coco_evaluate name
METRIC_NAMES = {"ap": "AP", "ap50": "AP50", "ap75": "AP75", "ap_small": "APs", "ap_medium": "APm",
                "ap_large": "APl", "ar": "AR"}


def _slice_annotations(document: dict, z: int, path: Path) -> list[dict]:
    images = document["images"]
    chosen = [im for im in images if int(im.get("slice", 0)) == z] if len(images) > 1 else images
    if len(chosen) != 1:
        raise InputError(f"holds no detections for slice {z}", path)
    return [a for a in document["annotations"] if a["image_id"] == chosen[0]["id"]]


def detection_report(items: list[dict], output_dir: str | Path, metrics_file: str | Path | None = None,
                     label_axes: str | None = None, **extra) -> dict:
    """Score every item (a slice with its mask) against `output_dir`/coco/<name>.json; write metrics_file.

    Undefined metrics (no cell of a size class) are written as null; `extra` entries are added as given.
    """
    output_dir = Path(output_dir)
    true_boxes, detections = [], []
    for image_id, item in enumerate(items, start=1):
        true_boxes.append(labels_to_boxes(stack_labels(item["label"], int(item["slice"]), label_axes)))
        path = output_dir / "coco" / f"{item['name']}.json"
        for annotation in _slice_annotations(load_coco_json(path), int(item["slice"]), path):
            detections.append({"image_id": image_id, "category_id": 1, "bbox": annotation["bbox"],
                               "score": float(annotation.get("score", 1.0))})
    scores = coco_evaluate(boxes_to_coco_gt(true_boxes), detections, iou_type="bbox")
    report = {name: (None if scores[key] < 0 else float(scores[key])) for name, key in METRIC_NAMES.items()}
    report.update({"n_images": len(items), "n_cells": int(sum(len(b) for b in true_boxes)),
                   "n_detections": len(detections)})
    report.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in extra.items()})
    if metrics_file is not None:
        report = write_metrics(metrics_file, report)
    return report
