"""COCO / LIVECell instance annotations: JSON loading, datalist entries, label image conversion."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.datalist import assign_folds

REQUIRED_KEYS = ("images", "annotations")
IMAGE_KEYS = ("id", "file_name", "height", "width")


def load_coco_json(path: str | Path) -> dict:
    """Load a COCO JSON, turning LIVECell's {id: annotation} dict into the usual list."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON: {exc}", path) from exc
    if not isinstance(data, dict):
        raise InputError("not a COCO file: top level is not an object", path)
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise InputError(f"not a COCO file: missing key(s) {', '.join(missing)}", path)
    for key in REQUIRED_KEYS:
        if isinstance(data[key], dict):  # LIVECell stores annotations keyed by id
            data[key] = list(data[key].values())
    return data


def read_coco(
    json_path: str | Path, image_root: str | Path | None = None, n_folds: int = 5, seed: int = 0
) -> list[dict]:
    """List the images of a COCO JSON with their annotations; images without any are unlabelled."""
    json_path = Path(json_path)
    data = load_coco_json(json_path)
    if not data["images"]:
        raise InputError("COCO file lists no images", json_path)
    by_image: dict[Any, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    roots = _image_roots(json_path, image_root)
    entries = [_entry(image, by_image.get(image.get("id"), []), roots, json_path) for image in data["images"]]
    return assign_folds(sorted(entries, key=lambda e: e["name"]), n_folds=n_folds, seed=seed)


def _image_roots(json_path: Path, image_root: str | Path | None) -> list[Path]:
    if image_root is not None:
        return [Path(image_root)]
    return [json_path.parent, json_path.parent / "images"]


def _entry(image: dict, annotations: list[dict], roots: list[Path], json_path: Path) -> dict:
    missing = [key for key in IMAGE_KEYS if key not in image]
    if missing:
        raise InputError(f"image record {image.get('id', '?')} lacks {', '.join(missing)}", json_path)
    return {
        "image": str(_find_image(image["file_name"], roots, json_path).absolute()),
        "image_id": image["id"],
        "height": int(image["height"]),
        "width": int(image["width"]),
        "annotations": annotations,
        "name": Path(image["file_name"]).stem,
    }


def _find_image(file_name: str, roots: list[Path], json_path: Path) -> Path:
    for root in roots:
        if (root / file_name).is_file():
            return root / file_name
    looked = ", ".join(str(root) for root in roots)
    raise InputError(f"image file '{file_name}' not found (looked in {looked})", json_path)


def coco_to_label_image(
    annotations: list[dict], height: int, width: int, id_key: str | None = None
) -> np.ndarray:
    """Rasterise annotations into an instance label image (label i+1, or ann[id_key]); later ones on top."""
    values = [int(a[id_key]) if id_key else i + 1 for i, a in enumerate(annotations)]
    dtype = np.uint16 if max(values, default=0) < 2**16 else np.int32
    labels = np.zeros((height, width), dtype=dtype)
    for annotation, value in zip(annotations, values):
        mask = annotation_to_mask(annotation, height, width)
        labels[mask] = value
    return labels


def annotation_to_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """Decode one annotation's polygon or RLE segmentation to a boolean (height, width) mask."""
    from pycocotools import mask as mask_utils

    rle = _to_rle(annotation.get("segmentation"), height, width, annotation.get("id"))
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools' Cython arrays trigger a NumPy 2 "copy keyword" DeprecationWarning on every decode.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _to_rle(segmentation: Any, height: int, width: int, ann_id: Any) -> dict | None:
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


def label_image_to_coco(
    labels: np.ndarray, image_id: int, start_ann_id: int = 1, use_rle: bool = False
) -> list[dict]:
    """Convert a 2D instance label image to COCO annotations (category 1), one per label value."""
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"COCO needs a 2D integer label image, got {labels.dtype} {labels.shape}")
    annotations = []
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box] == value
        segmentation = _rle_of(crop, box, labels.shape) if use_rle else _polygons_of(crop, box)
        annotations.append(_annotation(start_ann_id + len(annotations), image_id, crop, box, segmentation))
    return annotations


def _annotation(ann_id: int, image_id: int, crop: np.ndarray, box: tuple, segmentation: Any) -> dict:
    y0, x0 = box[0].start, box[1].start
    height, width = crop.shape
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": segmentation,
        "area": int(crop.sum()),
        "bbox": [int(x0), int(y0), int(width), int(height)],
        "iscrowd": 0,
    }


def _rle_of(crop: np.ndarray, box: tuple, shape: tuple[int, int]) -> dict:
    from pycocotools import mask as mask_utils

    full = np.zeros(shape, dtype=np.uint8, order="F")
    full[box] = crop
    rle = mask_utils.encode(full)
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
