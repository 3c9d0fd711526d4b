"""LightMyCells datalists for the UNETR bundle: images (all their focal planes), single planes, inference inputs.

`cellzoo.io.read_lightmycells` gives one entry per (study, image id) with its focal planes ("image", a
list) and organelle targets. Training draws a random plane of an entry per sample (`RandomPlaned`);
validation, evaluation and inference score every plane on its own, as the challenge does (each test input
is one plane at some focal offset from the best focus of its target).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io import check_training_items, list_images, read_image
from cellzoo.io.layouts.focal_series import INPUT_RE, ORGANELLES, STUDY_RE, read_lightmycells

__all__ = ["BEST_FOCUS", "best_focus", "inference_items", "lightmycells_items", "plane_items"]

logger = logging.getLogger(__name__)

# how the best-focus plane of a z-series is found for the focal-offset aggregation
BEST_FOCUS = ("middle", "blur")


def lightmycells_items(dataset_dir: str | Path, organelle: str | None = None, n_folds: int = 5,
                       seed: int = 0) -> list[dict]:
    """Entries of a LightMyCells folder: with `organelle`, those that have it ("label" = its target file).

    Without an organelle (MAE pretraining) every image counts, labelled or not. Sizes of the planes (and
    target) of each entry are checked against each other before training.
    """
    if organelle is not None and organelle not in ORGANELLES:
        raise InputError(f"unknown organelle '{organelle}' (choose from {', '.join(ORGANELLES)})", dataset_dir)
    entries = read_lightmycells(dataset_dir, organelle=organelle, n_folds=n_folds, seed=seed)
    keys = ("image", "label") if organelle else ("image",)
    what = f"images with a {organelle} target" if organelle else "label-free images"
    return check_training_items(entries, dataset_dir, keys, what)


def best_focus(planes: list[str], z: list[int], method: str = "middle") -> int:
    """The z index of the best-focused plane: `middle` of the series, or `blur` (least skimage blur_effect).

    Real LightMyCells data records the best focus only in the organisers' ground truth (pass it as a
    table to `plane_items`). The paper picks the input plane "with less blur" by skimage's blur_effect;
    that is offered, but it is not the default: on label-free planes the least blurred one need not be
    the focus of the fluorescence target (on cellzoo's synthetic bright-field series, whose targets are
    rendered at the middle plane, it picks an outer plane).
    """
    if method not in BEST_FOCUS:
        raise InputError(f"best_focus must be one of {BEST_FOCUS} or a CSV file, got {method!r}")
    if method == "middle" or len(planes) == 1:
        return z[(len(z) - 1) // 2]
    from skimage.measure import blur_effect

    blur = [blur_effect(np.asarray(read_image(path, axes="YX")[0], dtype=np.float64)) for path in planes]
    return z[int(np.argmin(blur))]


def _best_focus_table(path: str | Path) -> dict[str, int]:
    """name -> best z from a CSV with columns name, best_z (the challenge's BESTZZ files also have these)."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"name", "best_z"} <= set(rows[0]):
        raise InputError("a best-focus table needs the columns name, best_z", path)
    return {row["name"]: int(row["best_z"]) for row in rows}


def plane_items(entries: list[dict], best: str = "middle") -> list[dict]:
    """One entry per focal plane: "image" (and "path") one plane file, its item, study folder, modality, z, |z - z_best|.

    `best` is a BEST_FOCUS method or a CSV file (columns name, best_z) naming each item's best plane.
    """
    table = _best_focus_table(best) if best not in BEST_FOCUS else None
    out = []
    for entry in entries:
        if table is not None and entry["name"] not in table:
            raise InputError(f"the best-focus table has no row for {entry['name']}", best)
        z_best = table[entry["name"]] if table is not None else best_focus(entry["image"], entry["z"], best)
        for path, z in zip(entry["image"], entry["z"]):
            plane = {"image": path, "path": path, "folder": entry.get("study", ""), "name": f"{entry['name']}_z{z}",
                     "item": entry["name"], "modality": entry["modality"], "z": int(z),
                     "focal_offset": abs(int(z) - int(z_best))}
            if "label" in entry:
                plane["label"] = entry["label"]
            out.append(plane)
    return out


def inference_items(input_dir: str | Path) -> list[dict]:
    """Every label-free image to predict, with "path" (its file) and "folder" (its sub-folder of input_dir).

    A LightMyCells folder (Study_N sub-folders) gives every input plane of every study, with organelle
    targets left out; any other folder gives its image files (each one plane, as the challenge's inputs).
    """
    root = Path(input_dir)
    studies = sorted(p for p in root.iterdir() if p.is_dir() and STUDY_RE.match(p.name)) if root.is_dir() else []
    if not studies:
        files = list(list_images(root).values())
        return [{"image": str(path), "path": str(path), "folder": ""} for path in files]
    items = [{"image": str(path), "path": str(path), "folder": study.name}
             for study in studies for path in sorted(study.iterdir()) if INPUT_RE.match(path.name)]
    if not items:
        raise InputError("no label-free planes (image_<id>_<BF|PC|DIC>_z<k>.ome.tiff) in the Study folders", root)
    return items
