"""Whole-field instance scores of the ISL segmenters (evaluate_instances.yaml): the label images inference
wrote (<output_dir>/labels/<field>_label.tiff) against each field's label_nuclei / label_cells."""

from __future__ import annotations

import logging
from pathlib import Path

from cellzoo.errors import InputError
from cellzoo.io import read_labels
from cellzoo.metrics.folders import instance_report
from cellzoo.metrics.report import write_metrics

__all__ = ["write_field_instance_report"]

logger = logging.getLogger(__name__)


def write_field_instance_report(output_dir: str | Path, datalist: list[dict], out_json: str | Path,
                                iou: float = 0.5, border_margin: int = 0) -> dict:
    """Score every field of `datalist` ({"path": field folder, "gt": its label image}); write and return the report.

    The fields' label files share one name (label_nuclei.tif in every field), so prediction and truth
    are paired by field, not by file stem as `cellzoo.metrics.folders.write_instance_report` pairs them.
    """
    pairs = []
    for entry in datalist:
        predicted = Path(output_dir) / "labels" / f"{Path(entry['path']).name}_label.tiff"
        if not predicted.is_file():
            raise InputError("no predicted label image for this field", predicted)
        pairs.append((read_labels(entry["gt"]), read_labels(predicted, allow_empty=True)))
    report = instance_report(pairs, iou=iou, border_margin=border_margin)
    report = write_metrics(out_json, report)
    logger.info("F1@%.2f = %.4f, box AP %.4f over %d fields -> %s", iou, report["f1"], report["box_ap"],
                len(pairs), out_json)
    return report
