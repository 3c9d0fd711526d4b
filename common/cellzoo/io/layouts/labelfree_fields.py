"""Label-free fields, the layout of in silico labelling data (`isl` in `cellzoo synth`): one folder per field
with input_<plane>.* label-free planes, target_<stain>.* fluorescence images and label_<kind>.* instance labels
(read and write)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.datalist import assign_folds
from cellzoo.io.files import IMAGE_SUFFIXES, image_suffix
from cellzoo.io.images import as_label_dtype, write_tiff
from cellzoo.io.validate import check_dir

ROLE_RE = re.compile(r"^(input|target|label)_(.+)$")
# role prefix in the file name -> key in the entry
ROLE_KEYS = {"input": "inputs", "target": "targets", "label": "labels"}


def read_labelfree_fields(root: str | Path, n_folds: int = 5, seed: int = 0) -> list[dict]:
    """List fields {"name", "inputs", "targets", "labels", "fold"} (each a dict name -> path): root itself
    when it holds input_* files, else each subfolder that does."""
    root = check_dir(root)
    single = _field_entry(root)
    if single["inputs"]:
        entries = [single]
    else:
        entries = [_field_entry(p) for p in sorted(root.iterdir()) if p.is_dir()]
        entries = [entry for entry in entries if entry["inputs"]]
    if not entries:
        raise InputError("not a label-free fields (ISL) layout: no input_<name> images here or in any subfolder", root)
    return assign_folds(entries, n_folds=n_folds, seed=seed)


def _field_entry(folder: Path) -> dict:
    return {"name": folder.name, **_field_files(folder)}


def _field_files(folder: Path) -> dict[str, dict[str, str]]:
    """Group a field's image files by role, keyed by the name after the role prefix."""
    found: dict[str, dict[str, str]] = {key: {} for key in ROLE_KEYS.values()}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        suffix = image_suffix(path)
        match = ROLE_RE.match(path.name[: -len(suffix)]) if suffix in IMAGE_SUFFIXES else None
        if match:
            role, name = match.groups()
            found[ROLE_KEYS[role]][name] = str(path.absolute())
    return {key: dict(sorted(files.items(), key=lambda item: _natural_key(item[0]))) for key, files in found.items()}


def _natural_key(name: str) -> list:
    """Sort key that orders z2 before z10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def write_labelfree_field(root: str | Path, name: str, inputs: dict[str, np.ndarray],
                          targets: dict[str, np.ndarray] | None = None,
                          labels: dict[str, np.ndarray] | None = None) -> Path:
    """Write field root/<name>: input_<plane>.tif for each input plane, target_<stain>.tif, label_<kind>.tif
    (2D TIFFs; labels as instance images); returns the field's folder."""
    folder = Path(root) / name
    for role, images in (("input", inputs), ("target", targets or {})):
        for key, image in images.items():
            write_tiff(folder / f"{role}_{key}.tif", image, "YX")
    for key, image in (labels or {}).items():
        write_tiff(folder / f"label_{key}.tif", as_label_dtype(image), "YX")
    return folder
