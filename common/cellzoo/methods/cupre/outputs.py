"""The files of a CUPre inference run, per image: label TIFF, COCO JSON of the detections, per-cell CSV (with
each cell's detection score) and outline overlay; as a transform for a MONAI evaluator.

The evaluator runs with `decollate=False` (a detection is a variable-size set that MONAI's decollation
cannot split), so the transform receives the whole batch: every key holds one value per image.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cellzoo.io import file_stem, write_text, write_tiff
from cellzoo.methods.cupre.masks import detections_to_coco, detections_to_labels
from cellzoo.postprocess import measure_cells, write_measurements_csv, write_overlay_png

logger = logging.getLogger(__name__)

__all__ = ["SaveDetectionsd", "write_detection_outputs"]


def write_detection_outputs(stem: str, detections: dict, image: np.ndarray, output_dir: str | Path,
                            mask_threshold: float = 0.5, min_size: int = 0, write_extras: bool = True,
                            category_ids: Sequence[int] | None = None, category_names: Sequence[str] = ("cell",),
                            file_name: str | None = None) -> Path:
    """labels/<stem>_label.tiff, coco/<stem>.json and, with extras, measurements/<stem>_cells.csv and
    overlays/<stem>_overlay.png; returns the label file.

    The label image paints masks from the lowest score up (the most confident cell wins an overlap); the
    COCO file keeps every detection with its own mask, box and score, overlaps included (a COCO dataset
    of one image, usable as results for pycocotools).
    """
    output_dir = Path(output_dir)
    image = np.asarray(image)
    shape = image.shape[-2:]
    labels, scores = detections_to_labels(detections, shape, mask_threshold, min_size)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    label_path = write_tiff(output_dir / "labels" / f"{stem}_label.tiff", labels.astype(dtype), "YX")
    records = detections_to_coco(detections, shape, 1, mask_threshold, list(category_ids) if category_ids else None)
    ids = sorted({r["category_id"] for r in records} | set(category_ids or [1]))
    names = list(category_names) + [str(i) for i in ids[len(category_names):]]
    doc = {"images": [{"id": 1, "file_name": file_name or stem, "height": int(shape[0]), "width": int(shape[1])}],
           "annotations": [{"id": i, **r, "iscrowd": 0} for i, r in enumerate(records, start=1)],
           "categories": [{"id": c, "name": n} for c, n in zip(ids, names)]}
    write_text(output_dir / "coco" / f"{stem}.json", json.dumps(doc))
    if write_extras:
        rows = measure_cells(labels, image, channel_axis=0)
        for row in rows:
            row["score"] = scores.get(int(row["label"]), float("nan"))
        write_measurements_csv(rows, output_dir / "measurements" / f"{stem}_cells.csv")
        display = image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)
        write_overlay_png(output_dir / "overlays" / f"{stem}_overlay.png", display, labels)
    logger.info("%s: %d detections, %d cells in the label image", stem, len(records), int(labels.max(initial=0)))
    return label_path


class SaveDetectionsd:
    """Post-processing of a detection evaluator: `write_detection_outputs` for every image of the batch.

    `keys` holds the detections, `image_key` the raw (C, H, W) images the cells are measured on and
    `path_key` the source files, whose stems name the outputs.
    """

    def __init__(self, keys: str = "pred", output_dir: str | Path = "predictions", image_key: str = "raw",
                 path_key: str = "path", mask_threshold: float = 0.5, min_size: int = 0, write_extras: bool = True,
                 category_ids: Sequence[int] | None = None, category_names: Sequence[str] = ("cell",)):
        self.key, self.output_dir, self.image_key, self.path_key = keys, Path(output_dir), image_key, path_key
        self.mask_threshold, self.min_size, self.write_extras = float(mask_threshold), int(min_size), bool(write_extras)
        self.category_ids, self.category_names = category_ids, tuple(category_names)

    def __call__(self, data: Mapping[Hashable, Sequence]) -> dict:
        d = dict(data)
        for detections, image, path in zip(d[self.key], d[self.image_key], d[self.path_key]):
            write_detection_outputs(file_stem(Path(str(path))), detections, np.asarray(torch.as_tensor(image).cpu()),
                                    self.output_dir, self.mask_threshold, self.min_size, self.write_extras,
                                    self.category_ids, self.category_names, Path(str(path)).name)
        return d
