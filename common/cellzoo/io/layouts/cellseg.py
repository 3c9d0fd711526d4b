"""NeurIPS 2022 Cell Segmentation challenge layout: images/<stem>.* + labels/<stem>_label.tiff (read and write)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.datalist import assign_folds
from cellzoo.io.files import file_stem
from cellzoo.io.images import (
    RASTER_SUFFIXES,
    TIFF_SUFFIXES,
    as_label_dtype,
    write_image,
    write_tiff,
)
from cellzoo.io.validate import check_dir

IMAGE_SUFFIXES = TIFF_SUFFIXES + RASTER_SUFFIXES  # the challenge's 2D formats
# Checked in this order; the challenge itself uses .tiff.
LABEL_SUFFIXES = ("_label.tiff", "_label.tif", "_label.png")


def read_cellseg(root: str | Path, n_folds: int = 5, seed: int = 0) -> list[dict]:
    """List a CellSeg folder as datalist entries {"image", "label"?, "name", "fold"}."""
    root = check_dir(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise InputError("not a NeurIPS CellSeg layout: no images/ folder", root)
    images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(f"images/ holds no image files ({', '.join(IMAGE_SUFFIXES)})", root)
    stems = [file_stem(image) for image in images]  # a.ome.tif -> a, as everywhere in cellzoo
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise InputError(f"several images share the name(s) {', '.join(duplicates)} in images/", root)
    entries = [_entry(image, root / "labels") for image in images]
    return assign_folds(entries, n_folds=n_folds, seed=seed)


def _entry(image: Path, labels_dir: Path) -> dict:
    entry = {"image": str(image.absolute()), "name": file_stem(image)}
    label = _find_label(labels_dir, file_stem(image))
    if label is not None:
        entry["label"] = str(label.absolute())
    return entry


def _find_label(labels_dir: Path, stem: str) -> Path | None:
    for suffix in LABEL_SUFFIXES:
        candidate = labels_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def write_cellseg_item(root: str | Path, name: str, image: np.ndarray, labels: np.ndarray | None = None,
                       image_suffix: str = ".tif") -> Path:
    """Write one image as images/<name><image_suffix> (format by suffix; RGB as YXC) and its instance labels
    as labels/<name>_label.tiff; an image without labels is unlabelled. Returns the image path."""
    root = Path(root)
    image = np.asarray(image)
    path = write_image(root / "images" / f"{name}{image_suffix}", image, "YXC" if image.ndim == 3 else "YX")
    if labels is not None:
        write_tiff(root / "labels" / f"{name}{LABEL_SUFFIXES[0]}", as_label_dtype(labels), "YX")
    return path

