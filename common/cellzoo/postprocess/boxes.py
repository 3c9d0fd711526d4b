"""The files a detection run writes per image: COCO JSON boxes, a per-cell CSV and box overlays.

For detectors that output boxes rather than masks. A 3D stack analysed slice by slice gives one COCO image
(with its `slice`) per slice in one JSON file, one CSV with a `centroid_z` column and one overlay per
slice. `SaveBoxOutputsd` is the MONAI transform at the end of an inference engine; it collects the slices
of one image (items with one `name`, `group_size` of them) and writes when the last one arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from skimage.draw import rectangle_perimeter

from cellzoo.io.coco import boxes_to_coco, write_coco_json
from cellzoo.io.images import write_png
from cellzoo.postprocess.measure import write_measurements_csv
from cellzoo.postprocess.overlay import display_rgb

logger = logging.getLogger(__name__)

__all__ = ["SaveBoxOutputsd", "box_rows", "draw_boxes", "write_box_outputs"]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, color: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """uint8 (H, W, 3) display image (YX or YXC input) with each [x, y, w, h] box outlined in `color`.

    The outline runs just outside the box's pixels (skimage's rectangle_perimeter), so it never covers the cell.
    """
    rgb = display_rgb(image)
    for x, y, w, h in np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist():
        start = (round(y), round(x))
        end = (round(y + h) - 1, round(x + w) - 1)
        rows, cols = rectangle_perimeter(start, end=end, shape=rgb.shape[:2], clip=True)
        rgb[rows, cols] = np.asarray(color, dtype=np.uint8)
    return rgb


def box_rows(boxes: np.ndarray, scores: np.ndarray | None = None, z: int | None = None, first_label: int = 1) -> list[dict]:
    """Per-cell rows: label, [centroid_z], centroid (y, x), bbox (min inclusive, max exclusive), height, width, score."""
    rows = []
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for k, (x, y, w, h) in enumerate(boxes):
        row = {"label": first_label + k}
        if z is not None:
            row["centroid_z"] = int(z)
        row.update({"centroid_y": y + h / 2, "centroid_x": x + w / 2, "bbox_min_y": y, "bbox_min_x": x,
                    "bbox_max_y": y + h, "bbox_max_x": x + w, "height": h, "width": w})
        if scores is not None:
            row["score"] = float(scores[k])
        rows.append(row)
    return rows


def write_box_outputs(name: str, slices: list[dict], output_dir: str | Path, file_name: str | None = None,
                      write_extras: bool = True) -> Path:
    """coco/<name>.json and, with extras, measurements/<name>_cells.csv and overlays/<name>[_zZZZ]_overlay.png.

    `slices` holds per analysed slice {"slice", "boxes", "scores", "image" (display image, YX), "n_slices"}.
    """
    output_dir = Path(output_dir)
    slices = sorted(slices, key=lambda s: s["slice"])
    stack = any(int(s.get("n_slices", 1)) > 1 for s in slices)
    images, annotations, rows = [], [], []
    for image_id, item in enumerate(slices, start=1):
        height, width = np.asarray(item["image"]).shape[-2:]
        entry = {"id": image_id, "file_name": file_name or name, "height": int(height), "width": int(width)}
        if stack:
            entry["slice"] = int(item["slice"])
        images.append(entry)
        annotations += boxes_to_coco(item["boxes"], image_id, scores=item["scores"], start_ann_id=len(annotations) + 1)
        rows += box_rows(item["boxes"], item["scores"], item["slice"] if stack else None, first_label=len(rows) + 1)
    path = write_coco_json(output_dir / "coco" / f"{name}.json", images, annotations)
    if write_extras:
        write_measurements_csv(rows, output_dir / "measurements" / f"{name}_cells.csv")
        for item in slices:
            suffix = f"_z{int(item['slice']):03d}" if stack else ""
            write_png(output_dir / "overlays" / f"{name}{suffix}_overlay.png", draw_boxes(item["image"], item["boxes"]))
    return path


class SaveBoxOutputsd(MapTransform):
    """Write each image's detections (see `write_box_outputs`) once all its slices have passed.

    `keys` names nothing to change (the item passes unchanged); boxes and scores are read from
    `boxes_key`, `scores_key`; the display image is channel `display_channel` of `image_key`.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | Path, boxes_key: str = "boxes", scores_key: str = "scores",
                 image_key: str = "image", name_key: str = "name", path_key: str = "image", slice_key: str = "slice",
                 display_channel: int = 1, write_extras: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.write_extras = Path(output_dir), bool(write_extras)
        self.boxes_key, self.scores_key, self.image_key = boxes_key, scores_key, image_key
        self.name_key, self.path_key, self.slice_key = name_key, path_key, slice_key
        self.display_channel = int(display_channel)
        self.pending: dict[str, list[dict]] = {}

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        name = str(d[self.name_key])
        image = np.asarray(torch.as_tensor(d[self.image_key]).detach().float().cpu())
        item = {"slice": int(d.get(self.slice_key, 0)), "n_slices": int(d.get("n_slices", 1)),
                "boxes": np.asarray(d[self.boxes_key]), "scores": np.asarray(d[self.scores_key]),
                "image": image[self.display_channel] if image.ndim == 3 else image}
        slices = self.pending.setdefault(name, [])
        slices.append(item)
        if len(slices) >= int(d.get("group_size", 1)):
            del self.pending[name]
            path = write_box_outputs(name, slices, self.output_dir, Path(str(d[self.path_key])).name, self.write_extras)
            logger.info("%s: %d cells in %d slice(s) -> %s", name, sum(len(s["boxes"]) for s in slices),
                        len(slices), path)
        return d
