"""Box and mask AP of detections with the platform's COCO evaluation (`cellzoo.metrics.coco_evaluate`, LIVECell
and COCO protocols): as an ignite metric for validation inside engines, and as evaluate.yaml's report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.metrics import Metric

from cellzoo.engines import distributed
from cellzoo.errors import InputError
from cellzoo.io import coco_to_label_image, file_stem, load_coco_json, read_labels
from cellzoo.metrics import coco_evaluate, evaluate_instances, write_metrics
from cellzoo.methods.cupre.masks import detections_to_coco

logger = logging.getLogger(__name__)

__all__ = ["DetectionAPMetric", "ground_truth_coco", "write_detection_report"]

IOU_TYPES = ("bbox", "segm")


def ground_truth_coco(records: Sequence[dict], category_ids: Sequence[int] | None = None,
                      merge_categories: bool = True) -> dict:
    """A COCO dataset of ground-truth records {annotations, height, width}: image i gets id i + 1.

    With `merge_categories` every object is category 1 (a cell); otherwise categories are numbered as the
    detector's classes (position in `category_ids`, 1-based), so predictions need no mapping.
    """
    index = {int(c): k for k, c in enumerate(category_ids or [], start=1)}
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append({"id": image_id, "height": int(record["height"]), "width": int(record["width"])})
        for annotation in record["annotations"]:
            category = 1 if merge_categories else index.get(int(annotation.get("category_id", 1)), 1)
            annotations.append({**annotation, "id": len(annotations) + 1, "image_id": image_id, "category_id": category})
    n_classes = 1 if merge_categories else max(len(index), 1)
    return {"images": images, "annotations": annotations, "categories": [{"id": k} for k in range(1, n_classes + 1)]}


def _score(gt: dict, results: list[dict], iou_type: str, protocol: str) -> dict:
    """coco_evaluate's summary; with no object in the ground truth there is nothing to score (all -1)."""
    if not gt["annotations"]:
        return {"AP": -1.0}
    return coco_evaluate(gt, results, iou_type=iou_type, protocol=protocol)


def _instance_f1(prediction_dir: Path, records: Sequence[dict], iou: float = 0.5) -> dict:
    """F1, precision and recall at `iou` of labels/<stem>_label.tiff against the rasterised ground truth."""
    pairs = []
    for record in records:
        path = prediction_dir / "labels" / f"{file_stem(record['image'])}_label.tiff"
        if not path.is_file():
            raise InputError("no predicted label image for this image", path)
        truth = coco_to_label_image(record["annotations"], int(record["height"]), int(record["width"]))
        pairs.append((truth, read_labels(path, allow_empty=True)))
    scores = evaluate_instances(pairs, iou=iou)
    return {name: float(scores[name]) for name in ("f1", "precision", "recall")}


class DetectionAPMetric(Metric):
    """COCO AP (`iou_type` bbox or segm, LIVECell or COCO `protocol`) of an evaluator's detections.

    `output_transform` gives (detections per image, ground-truth records per image); the score is computed
    over every image seen in the epoch, gathered from all processes of a distributed run and counted once
    by name (with fewer validation images than processes, every process validates every image). Undefined
    AP (no object at all) counts as 0 so model selection still works.
    """

    def __init__(self, iou_type: str = "segm", protocol: str = "livecell", merge_categories: bool = True,
                 category_ids: Sequence[int] | None = None, mask_threshold: float = 0.5,
                 output_transform=lambda x: (x["pred"], x["label"]), device="cpu"):
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type, self.protocol, self.merge = iou_type, protocol, bool(merge_categories)
        self.category_ids, self.mask_threshold = list(category_ids or []), float(mask_threshold)
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self.records: list[dict] = []
        self.results: list[list[dict]] = []
        self.names: list = []

    def update(self, output) -> None:
        detections, records = output
        for det, record in zip(detections, records):
            shape = (int(record["height"]), int(record["width"]))
            self.records.append({k: record[k] for k in ("annotations", "height", "width")})
            # an image without a name is its own (rank, position): never merged with another
            self.names.append(record.get("name", (distributed.rank(), len(self.names))))
            # merged: every detection is a cell; otherwise the detector's classes already number categories 1..K
            mapped = {**det, "labels": torch.ones_like(det["labels"])} if self.merge else det
            self.results.append(detections_to_coco(mapped, shape, 0, self.mask_threshold)
                                if self.iou_type == "segm" else _box_results(mapped))

    def compute(self) -> float:
        records, results = self.records, self.results
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (self.names, records, results))
            once = {}  # name -> (record, results), the first process's copy of an image validated by several
            for names, part_records, part_results in gathered:
                for name, record, result in zip(names, part_records, part_results):
                    once.setdefault(name, (record, result))
            records, results = [r for r, _ in once.values()], [r for _, r in once.values()]
        self.images_scored = len(records)
        gt = ground_truth_coco(records, self.category_ids, self.merge)
        flat = [{**r, "image_id": i} for i, image_results in enumerate(results, start=1) for r in image_results]
        ap = _score(gt, flat, self.iou_type, self.protocol)["AP"]
        return max(float(ap), 0.0)


def _box_results(detections: dict) -> list[dict]:
    """COCO bbox results of one image (image_id filled in later)."""
    return [{"image_id": 0, "category_id": int(label), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "score": float(score)}
            for b, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                       detections["labels"].tolist())]


def write_detection_report(prediction_dir: str | Path, records: Sequence[dict], out_json: str | Path,
                           merge_categories: bool = True, category_ids: Sequence[int] | None = None) -> dict:
    """Score the COCO files an inference run wrote (<prediction_dir>/coco/<stem>.json) against the ground
    truth of `records` (datalist entries: image, annotations, height, width), write and return metrics.json.

    Predicted categories are the detector's classes 1..K; the ground truth's are numbered as they
    (position in `category_ids`), or all 1 with `merge_categories`.

    Box and mask AP, AP50, AP75, APs/m/l and AR with the LIVECell protocol (maxDets 100/500/2000, cell size
    ranges; keys `bbox_AP`, `segm_AP`, ...) and with the COCO protocol (keys `coco_bbox_AP`, ...); and F1,
    precision and recall at IoU 0.5 of the label images it wrote (<prediction_dir>/labels), as segmenters
    are scored (`f1`, `precision`, `recall`).
    """
    prediction_dir = Path(prediction_dir)
    results = []
    for image_id, record in enumerate(records, start=1):
        path = prediction_dir / "coco" / f"{file_stem(record['image'])}.json"
        if not path.is_file():
            raise InputError("no prediction for this image", path)
        predicted = load_coco_json(path)["annotations"]
        for r in predicted:
            category = 1 if merge_categories else r["category_id"]
            results.append({**r, "image_id": image_id, "category_id": category})
    gt = ground_truth_coco(records, category_ids, merge_categories)
    report: dict = {"n_images": len(records), "n_objects": len(gt["annotations"]), "n_detections": len(results)}
    for protocol, prefix in (("livecell", ""), ("coco", "coco_")):
        for iou_type in IOU_TYPES:
            for key, value in _score(gt, results, iou_type, protocol).items():
                report[f"{prefix}{iou_type}_{key}"] = float(value)
    report.update(_instance_f1(prediction_dir, records))
    report = write_metrics(out_json, report)
    logger.info("box AP %.4f, mask AP %.4f (LIVECell protocol) over %d images -> %s", report["bbox_AP"],
                report["segm_AP"], len(records), out_json)
    return report
