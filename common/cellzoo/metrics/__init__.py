"""Evaluation metrics: instance matching/F1/AP, COCO AP (coco and livecell protocols), image-to-image scores."""

from cellzoo.metrics.coco import PROTOCOLS, coco_evaluate, label_pairs_coco_ap, labels_to_coco_results
from cellzoo.metrics.image import image_metrics, mean_image_metrics, percentile_normalize
from cellzoo.metrics.instance import (
    average_precision,
    evaluate_instances,
    instance_scores,
    iou_matrix,
    match_instances,
    remove_border_cells,
)
from cellzoo.metrics.report import format_scores, write_metrics

__all__ = [
    "PROTOCOLS",
    "average_precision",
    "coco_evaluate",
    "evaluate_instances",
    "format_scores",
    "image_metrics",
    "instance_scores",
    "iou_matrix",
    "label_pairs_coco_ap",
    "labels_to_coco_results",
    "match_instances",
    "mean_image_metrics",
    "percentile_normalize",
    "remove_border_cells",
    "write_metrics",
]
