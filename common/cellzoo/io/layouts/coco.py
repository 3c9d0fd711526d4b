"""COCO / LIVECell layout: a COCO JSON and its images/ folder (read as datalist entries with their annotations,
and written image by image)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.coco import load_coco_json
from cellzoo.io.datalist import assign_folds
from cellzoo.io.images import write_image

IMAGE_KEYS = ("id", "file_name", "height", "width")


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


def write_coco_image(root: str | Path, image_id: int, file_name: str, image: np.ndarray) -> dict:
    """Write a 2D image (RGB as YXC) as images/<file_name>, format by suffix, and return its COCO image record;
    the annotations and the JSON file (`cellzoo.io.coco.label_image_to_coco`, `write_coco_json`) are the caller's."""
    image = np.asarray(image)
    write_image(Path(root) / "images" / file_name, image, "YXC" if image.ndim == 3 else "YX")
    return {"id": image_id, "file_name": file_name, "height": int(image.shape[0]), "width": int(image.shape[1])}
