"""File naming and small file reads shared by every command: image stems, folder listings, JSON."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellzoo.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
OME_SUFFIXES = (".ome.tif", ".ome.tiff")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = OME_SUFFIXES + TIFF_SUFFIXES + RASTER_SUFFIXES + NIFTI_SUFFIXES

# Ground truth in the NeurIPS CellSeg layout is named <stem>_label.tiff; predictions may be too.
IGNORED_STEM_SUFFIXES = ("_label",)


def image_suffix(path: str | Path) -> str:
    """Lower-case suffix of an image path, keeping the compound ones (.ome.tif, .nii.gz)."""
    name = Path(path).name.lower()
    for suffix in OME_SUFFIXES + (".nii.gz",):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def file_stem(path: str | Path) -> str:
    """Stem of an image file with multi-part suffixes (.ome.tif, .nii.gz) and a trailing `_label` removed."""
    name = Path(path).name
    suffix = image_suffix(name)
    if suffix in IMAGE_SUFFIXES:
        name = name[: -len(suffix)]
    for ignored in IGNORED_STEM_SUFFIXES:
        if name.endswith(ignored):
            name = name[: -len(ignored)]
    return name


def list_images(folder: str | Path) -> dict[str, Path]:
    """Map stem -> path for the image files directly inside a folder; two files with one stem are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder not found" if not folder.exists() else "not a folder", folder)
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and image_suffix(path) in IMAGE_SUFFIXES:
            stem = file_stem(path)
            if stem in files:
                raise InputError(f"two files share the stem '{stem}': {files[stem].name}, {path.name}", folder)
            files[stem] = path
    if not files:
        raise InputError(f"no image files found ({', '.join(IMAGE_SUFFIXES)})", folder)
    return files


def images_by_stem(source: str | Path | list) -> dict[str, Path]:
    """Map stem -> path for a folder of images (see list_images) or for a list of image files."""
    if not isinstance(source, (list, tuple)):
        return list_images(source)
    files: dict[str, Path] = {}
    for path in map(Path, source):
        if file_stem(path) in files:
            raise InputError(f"two files share the stem '{file_stem(path)}': {files[file_stem(path)]}", path)
        files[file_stem(path)] = path
    return files


def pair_by_stem(pred_dir: str | Path | list, gt_dir: str | Path | list) -> list[tuple[str, Path, Path]]:
    """(stem, prediction, ground truth) for every stem of two folders (or file lists); unmatched stems are an error."""
    pred, gt = images_by_stem(pred_dir), images_by_stem(gt_dir)
    only_pred, only_gt = sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(f"no prediction for {_preview(only_gt)}")
        if only_pred:
            parts.append(f"no ground truth for {_preview(only_pred)}")
        raise InputError("unmatched stems between predictions and ground truth: " + "; ".join(parts),
                         pred_dir if not isinstance(pred_dir, (list, tuple)) else None)
    return [(stem, pred[stem], gt[stem]) for stem in sorted(gt)]


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or malformed file is one InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found" if not path.exists() else "not a file", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"invalid JSON ({err})", path) from err


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run `write` on a temporary file beside `path`, then rename it into place; returns `path`.

    Readers never see half a file, and a failed write leaves nothing behind. The temporary file has
    `path`'s suffix (writers pick the format from it) and the permissions the user's umask gives a new
    file (tempfile.mkstemp would make it readable by its owner only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}{image_suffix(path)}"
    try:  # created here with mode 0666 so the kernel applies the umask; writers reopen it and keep the mode
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:  # name the user's file, not the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from err
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:  # a full disk or a lost mount while writing: the user's file, one line
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text))

