"""The one converter between instance label images and COCO annotations, and COCO JSON loading.

Used by the COCO/LIVECell layout reader, the COCO metrics (prediction results) and the synthetic COCO
writer, so a mask written by one reads back identically in the others. Conventions:

- polygons are traced on pixel edges (COCO pixel (x, y) covers [x, x+1] x [y, y+1]), so rasterising
  them with pycocotools gives back exactly the same pixels;
- RLE is pycocotools' compressed RLE with `counts` as an ASCII string (JSON-serialisable);
- `bbox` is [x, y, width, height] of the mask's pixels, `area` its pixel count, category 1 by default.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.files import load_json

REQUIRED_KEYS = ("images", "annotations")
SEGMENTATIONS = ("polygon", "rle")


def load_coco_json(source: str | Path | dict) -> dict:
    """A COCO dataset as a dict with list-valued `images` and `annotations`, each annotation with an id.

    LIVECell stores `annotations` as {id: annotation}; those become a list (the key is the id when the
    annotation has none). Annotations without `iscrowd` get 0, and a file without `categories` gets one
    category per category id used.
    """
    path = source if isinstance(source, (str, Path)) else None
    data = load_json(source) if path is not None else source
    if not isinstance(data, dict):
        raise InputError("not a COCO file: top level is not an object", path)
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise InputError(f"not a COCO file: missing key(s) {', '.join(missing)}", path)
    annotations = data["annotations"]
    if isinstance(annotations, dict):
        annotations = [{"id": _as_id(key), **value} for key, value in annotations.items()]
    images = list(data["images"].values()) if isinstance(data["images"], dict) else list(data["images"])
    annotations = [{"iscrowd": 0, "id": i + 1, **a} for i, a in enumerate(annotations)]
    categories = data.get("categories") or [{"id": c} for c in sorted({a.get("category_id", 1) for a in annotations})]
    return {**data, "images": images, "annotations": annotations, "categories": categories}


def _as_id(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def label_image_to_coco(labels: np.ndarray, image_id: int, start_ann_id: int = 1, segmentation: str = "polygon",
                        category_id: int = 1) -> list[dict]:
    """One COCO annotation per label value of a 2D instance label image, in ascending label order.

    Each annotation also carries `label`, the label value it came from (COCO readers ignore extra keys).
    """
    from scipy import ndimage

    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"COCO needs a 2D integer label image, got {labels.dtype} {labels.shape}")
    # One reusable Fortran-order canvas for RLE: only each object's box is written and cleared again.
    canvas = np.zeros(labels.shape, dtype=np.uint8, order="F") if segmentation == "rle" else None
    annotations = []
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box] == value
        if canvas is None:
            shape = _polygons_of(crop, box)
        else:
            canvas[box] = crop
            shape = _rle_of(canvas)
            canvas[box] = 0
        annotations.append(_annotation(start_ann_id + len(annotations), image_id, category_id, value, crop, box, shape))
    return annotations


def _annotation(ann_id: int, image_id: int, category_id: int, value: int, crop: np.ndarray, box: tuple,
                segmentation: Any) -> dict:
    height, width = crop.shape  # find_objects boxes are tight
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": int(crop.sum()),
        "bbox": [int(box[1].start), int(box[0].start), int(width), int(height)],
        "iscrowd": 0,
        "label": int(value),
    }


def _rle_of(canvas: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(canvas)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _polygons_of(crop: np.ndarray, box: tuple) -> list[list[float]]:
    """Outline polygons in COCO pixel-corner coordinates."""
    from skimage.measure import find_contours

    # Tracing a 2x upsampled mask puts the contour on the original pixel edges, so
    # rasterising the polygon gives back the same pixels.
    fine = np.pad(np.kron(crop, np.ones((2, 2), dtype=bool)), 1).astype(np.float32)
    polygons = []
    for contour in find_contours(fine, 0.5):
        ring = _drop_collinear(contour[:-1])  # find_contours repeats the first point at the end
        if len(ring) < 3:
            continue
        ys = (ring[:, 0] - 0.5) / 2 + box[0].start
        xs = (ring[:, 1] - 0.5) / 2 + box[1].start
        polygons.append([round(float(v), 3) for xy in zip(xs, ys) for v in xy])
    return polygons


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (keeps JSON small)."""
    before, after = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    d1, d2 = ring - before, after - ring
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    return ring[np.abs(cross) > 1e-9]


def boxes_to_coco(boxes, image_id: int, scores=None, start_ann_id: int = 1, category_id: int = 1) -> list[dict]:
    """One box-only COCO annotation per [x, y, w, h] box (area = w * h), with `score` when scores are given.

    For detectors (no masks): the same annotation fields as `label_image_to_coco`, so ground truth,
    predictions and result files of boxes read back with `load_coco_json` and score with pycocotools.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if scores is not None and len(scores) != len(boxes):
        raise InputError(f"got {len(scores)} scores for {len(boxes)} boxes")
    annotations = []
    for k, (x, y, w, h) in enumerate(boxes):
        annotation = {"id": start_ann_id + k, "image_id": image_id, "category_id": category_id,
                      "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0}
        if scores is not None:
            annotation["score"] = float(scores[k])
        annotations.append(annotation)
    return annotations


def write_coco_json(path: str | Path, images: list[dict], annotations: list[dict],
                    categories: list[dict] | None = None, description: str | None = None) -> Path:
    """Write a COCO dataset file (images, annotations, categories; default one category "cell"), atomically;
    `description` goes in its "info" record."""
    import json

    from cellzoo.io.files import write_text

    info = {"info": {"description": description}} if description is not None else {}
    document = {**info, "images": images, "annotations": annotations,
                "categories": categories if categories is not None else [{"id": 1, "name": "cell"}]}
    return write_text(path, json.dumps(document, indent=1) + "\n")


def coco_to_label_image(annotations: list[dict], height: int, width: int, id_key: str | None = None) -> np.ndarray:
    """Rasterise annotations into an instance label image (label i+1, or ann[id_key]); later ones on top."""
    values = [int(a[id_key]) if id_key else i + 1 for i, a in enumerate(annotations)]
    dtype = np.uint16 if max(values, default=0) < 2**16 else np.int32
    labels = np.zeros((height, width), dtype=dtype)
    for annotation, value in zip(annotations, values):
        labels[annotation_to_mask(annotation, height, width)] = value
    return labels


def annotation_to_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """Decode one annotation's polygon or RLE segmentation to a boolean (height, width) mask."""
    from pycocotools import mask as mask_utils

    rle = to_rle(annotation.get("segmentation"), height, width, annotation.get("id"))
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools' Cython arrays trigger a NumPy 2 "copy keyword" DeprecationWarning on every decode.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def to_rle(segmentation: Any, height: int, width: int, ann_id: Any = None) -> dict | None:
    """Compressed RLE of a polygon list or (un)compressed RLE segmentation; None for an empty one."""
    from pycocotools import mask as mask_utils

    if not segmentation:
        return None  # bbox-only annotation: nothing to draw
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)) if polygons else None
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise InputError(f"annotation {ann_id}: segmentation is neither polygons nor RLE")
    if list(segmentation.get("size", [])) != [height, width]:
        raise InputError(f"annotation {ann_id}: RLE size {segmentation.get('size')} != image size {[height, width]}")
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation
