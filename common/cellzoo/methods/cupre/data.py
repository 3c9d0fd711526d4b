"""CUPre's data: COCO/LIVECell folders as datalists, few-shot fractions, unlabelled cell images from any
layout, the AMT2 split of a COCO set into parts, and label-image folders converted to COCO.

Every COCO file is read by the platform's reader (`cellzoo.io.read_coco`, which also takes LIVECell files
whose `annotations` is a dict) and every label image is converted by its one converter
(`cellzoo.io.label_image_to_coco`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from cellzoo.errors import InputError
from cellzoo.io import (
    IMAGE_SUFFIXES,
    assign_folds,
    file_stem,
    image_size,
    image_suffix,
    label_image_to_coco,
    list_images,
    read_coco,
    read_labels,
    select_items,
    split_items,
    write_text,
)

logger = logging.getLogger(__name__)

__all__ = ["PartSampler", "category_ids", "cell_images", "coco_items", "few_shot_split", "labelled",
           "labels_to_coco_folder", "take_fraction"]

# folders of label images, masks and ground truth in the layouts cellzoo reads (never unlabelled images)
LABEL_FOLDERS = ("labels", "masks", "label", "gt")


def _coco_files(dataset_dir: Path, annotations: str) -> tuple[list[Path], bool]:
    """The JSON files `annotations` names (a path, absolute or inside dataset_dir, or a glob there) and
    whether it named one file explicitly."""
    path = Path(annotations)
    if not path.is_absolute():
        path = dataset_dir / annotations
    if path.is_file():
        return [path], True
    files = sorted(p for p in dataset_dir.glob(annotations) if p.is_file())
    if not files:
        raise InputError(f"no JSON file matching {annotations!r}", dataset_dir)
    return files, False


def coco_items(dataset_dir: str | Path, annotations: str = "*.json", n_folds: int = 5, seed: int = 0) -> list[dict]:
    """Every image of the COCO file(s) in `dataset_dir` with its annotations (unlabelled ones too).

    `annotations` is a JSON file or a glob (default: every COCO JSON there; the synthetic and LIVECell
    layouts keep train/val/test in separate files). An image listed by two files is refused, since its
    annotations would be ambiguous (name one file instead). Each image's size is checked against its file.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise InputError("folder not found" if not dataset_dir.exists() else "not a folder", dataset_dir)
    files, explicit = _coco_files(dataset_dir, annotations)
    entries: dict[str, dict] = {}
    for file in files:
        try:
            found = read_coco(file, n_folds=1, seed=seed)
        except InputError as err:
            if explicit or "not a COCO file" not in str(err):
                raise
            logger.debug("skipping %s: %s", file, err)  # another JSON beside the COCO files
            continue
        for entry in found:
            if entry["name"] in entries:
                raise InputError(f"image {entry['name']!r} is listed in {entries[entry['name']]['json']} and in "
                                 f"{file.name}: pass --annotations with one file", dataset_dir)
            entry.pop("fold", None)
            entries[entry["name"]] = {**entry, "json": file.name}
    if not entries:
        raise InputError(f"no COCO file among the JSON files matching {annotations!r}", dataset_dir)
    for entry in entries.values():
        size = image_size(entry["image"])
        if size is not None and tuple(size) != (entry["height"], entry["width"]):
            raise InputError(f"image is {size[0]}x{size[1]} but its COCO record says "
                             f"{entry['height']}x{entry['width']}", entry["image"])
    return assign_folds(sorted(entries.values(), key=lambda e: e["name"]), n_folds=n_folds, seed=seed)


def labelled(entries: list[dict]) -> list[dict]:
    """The entries with at least one (non-crowd) annotation: the labelled items a fine-tuning may use."""
    kept = [e for e in entries if any(not a.get("iscrowd", 0) for a in e["annotations"])]
    if not kept:
        raise InputError(f"none of the {len(entries)} images has an annotation")
    return kept


def category_ids(entries: list[dict]) -> list[int]:
    """The sorted COCO category ids used by `entries`; the detector's class k is the k-th (1-based)."""
    return sorted({int(a.get("category_id", 1)) for e in entries for a in e["annotations"]})


def take_fraction(entries: list[dict], fraction: float | None, seed: int = 0) -> list[dict]:
    """round(fraction * N) entries (at least 1) drawn with `seed`; all of them when fraction is None or 1."""
    if fraction is None or float(fraction) >= 1.0:
        return list(entries)
    if not 0.0 < float(fraction) < 1.0:
        raise InputError(f"train_fraction must lie in (0, 1], got {fraction}")
    count = max(1, round(float(fraction) * len(entries)))
    chosen = set(e["name"] for e in random.Random(seed).sample(list(entries), count))
    return [e for e in entries if e["name"] in chosen]


def few_shot_split(entries: list[dict], train_items: Sequence[str] | None = None,
                   val_items: Sequence[str] | None = None, val_fold: int = 0, source: str | Path | None = None,
                   exclude_items: Sequence[str] | None = None, train_fraction: float | None = None,
                   fraction_seed: int = 0, val_entries: list[dict] | None = None) -> dict[str, list[dict]]:
    """The platform's `split_items`, then `train_fraction` of the training side (only when `train_items`
    is None: a study names its items itself). `val_entries` (e.g. a separate validation JSON) replaces the
    validation fold, so every listed item can train."""
    if val_entries is not None:
        split = {"train": split_items(entries, train_items, None, -1, source, exclude_items)["train"],
                 "val": select_items(val_entries, val_items, source)}
    else:
        split = split_items(entries, train_items, val_items, val_fold, source, exclude_items)
    if train_items is None:
        split["train"] = take_fraction(split["train"], train_fraction, fraction_seed)
        logger.info("training on %d labelled image(s) (train_fraction %s, seed %d)", len(split["train"]),
                    train_fraction, fraction_seed)
    return split


def cell_images(folder: str | Path, exclude_items: Sequence[str] | None = None, annotations: str = "*.json") -> list[dict]:
    """Unlabelled images for self-supervision, [{"image", "name"}], from a folder in any layout.

    COCO folders give every image their JSON lists (labelled or not); a folder with `images/` (CellSeg,
    converted sets) gives those; otherwise every image file below the folder that is not in a label or
    ground-truth folder (`labels/`, `masks/`, CTC `*_GT`, `*_ST`) nor named like a label. `exclude_items`
    (a study's test images) are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("folder not found" if not folder.exists() else "not a folder", folder)
    if any(folder.glob("*.json")):
        try:
            found = {e["name"]: e["image"] for e in coco_items(folder, annotations)}
        except InputError:
            found = {}
    else:
        found = {}
    if not found and (folder / "images").is_dir():
        found = {name: str(path) for name, path in list_images(folder / "images").items()}
    if not found:
        found = _image_files(folder)
    excluded = set(exclude_items or ())
    items = [{"image": str(path), "name": name} for name, path in sorted(found.items()) if name not in excluded]
    if not items:
        raise InputError("no unlabelled images found", folder)
    return items


def _image_files(folder: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        parts = [p.lower() for p in path.relative_to(folder).parts[:-1]]
        if any(p in LABEL_FOLDERS or p.endswith(("_gt", "_st")) for p in parts):
            continue
        if not path.is_file() or image_suffix(path) not in IMAGE_SUFFIXES:
            continue
        stem = file_stem(path)
        if stem.startswith(("man_seg", "man_track", "mask")) or path.name.lower().endswith(("_label.tiff", "_label.tif")):
            continue
        name = "/".join([*path.relative_to(folder).parts[:-1], stem])  # sequences share frame names
        files[name] = str(path)
    return files


class PartSampler(Sampler[int]):
    """Indices of one of `parts` fixed, near-equal parts of a dataset (AMT2 trains round k on part k).

    The split is a permutation drawn with `seed`; `set_part(k)` picks part k mod parts and `set_epoch` a new
    order. Every part yields the same number of indices (`samples_per_epoch`, or the largest part's size,
    repeating items of smaller parts), so an engine's epoch length never changes between rounds.
    """

    def __init__(self, size: int, parts: int, samples_per_epoch: int | None = None, seed: int = 0):
        if size < 1 or parts < 1:
            raise InputError(f"cannot split {size} item(s) into {parts} part(s)")
        if parts > size:
            logger.warning("%d COCO images for %d AMT2 parts: parts repeat images", size, parts)
        order = np.random.default_rng(seed).permutation(size)
        self.parts = [order[i * size // parts:(i + 1) * size // parts] if parts <= size else order[[i % size]]
                      for i in range(parts)]
        self.length = int(samples_per_epoch or max(len(p) for p in self.parts))
        self.seed, self.part, self.epoch = int(seed), 0, 0

    def set_part(self, part: int) -> None:
        self.part = int(part) % len(self.parts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        items = self.parts[self.part]
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.part * 1009 + self.epoch)
        reps = math.ceil(self.length / len(items))
        order = torch.cat([torch.randperm(len(items), generator=generator) for _ in range(reps)])[: self.length]
        return iter(int(items[i]) for i in order)


def _pair_key(stem: str) -> str:
    """Stems that name an image and its label alike: CTC's man_segNNN pairs with tNNN."""
    return stem.replace("man_seg", "t")


def labels_to_coco_folder(images_dir: str | Path, labels_dir: str | Path, out_dir: str | Path,
                          json_name: str = "annotations.json", category: str = "cell") -> Path:
    """A COCO folder (out_dir/images/ copies, out_dir/<json_name>) from images and instance label images
    paired by stem (CTC's tNNN / man_segNNN pair too), with polygons from `label_image_to_coco`."""
    images = {_pair_key(k): v for k, v in list_images(images_dir).items()}
    labels = {_pair_key(k): v for k, v in list_images(labels_dir).items()}
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise InputError(f"images and labels do not pair by name: {', '.join(missing[:5])}", labels_dir)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records, annotations = [], []
    for image_id, key in enumerate(sorted(images), start=1):
        label = read_labels(labels[key])
        size = image_size(images[key])
        if size is not None and tuple(size) != label.shape:
            raise InputError(f"label {label.shape} and image {size} differ in size", labels[key])
        target = out_dir / "images" / images[key].name
        shutil.copyfile(images[key], target)
        records.append({"id": image_id, "file_name": target.name, "height": int(label.shape[0]),
                        "width": int(label.shape[1])})
        annotations += label_image_to_coco(label, image_id, start_ann_id=len(annotations) + 1)
    doc = {"info": {"description": f"converted from {images_dir} and {labels_dir} by cellzoo"},
           "images": records, "annotations": annotations, "categories": [{"id": 1, "name": category}]}
    write_text(out_dir / json_name, json.dumps(doc))
    return out_dir
