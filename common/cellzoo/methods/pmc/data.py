"""PMC's data: frame lists (Cell Tracking Challenge or CellSeg layout), the pretext and detection splits,
per-slice items of 2D images and 3D stacks, and reading a slice with its neighbours.

Items are frames (CTC `01/t003.tif` -> name `01_t003`). The detection datalist holds the frames with
segmentation masks; the pretext takes every frame: the named training items plus, with
`include_unlabelled`, every frame without a mask, so a study's pool (labelled frame names) grows by all
the unlabelled frames of the time-lapse while its test frames stay out.

A 3D stack is analysed slice by slice (paper sec. 3.2.1): `expand_slices` turns each frame into one item
per slice (every slice for the pretext and inference, the annotated ones for detection: the `label_slice`
of a CTC single-slice mask, else every slice of a 3D mask that holds a cell), and `LoadContextd` reads
slices z-1, z, z+1 (edges repeated; a 2D image gives three copies) after the paper's preprocessing:
median filter (3 px, per slice) and min-max scaling of the whole stack.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage

from cellzoo.errors import InputError
from cellzoo.io import (
    check_finite,
    check_training_items,
    read_cellseg,
    read_ctc,
    read_image,
    read_labels,
    split_items,
    to_channel_first,
)

__all__ = ["LAYOUTS", "LoadContextd", "detection_datalist", "expand_slices", "folder_items", "pretext_split",
           "read_frames", "read_stack", "stack_labels"]

LAYOUTS = ("auto", "ctc", "cellseg")


def _layout(root: Path, layout: str) -> str:
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    return "cellseg" if (root / "images").is_dir() else "ctc"


def read_frames(root: str | Path, layout: str = "auto", silver: bool = False, n_folds: int = 5,
                seed: int = 0) -> list[dict]:
    """Every frame of a data set, those with masks carrying "label" (CTC gold SEG; silver ST with `silver`)."""
    root = Path(root)
    if _layout(root, layout) == "cellseg":
        return read_cellseg(root, n_folds=n_folds, seed=seed)
    return read_ctc(root, silver=silver, n_folds=n_folds, seed=seed)


def detection_datalist(root: str | Path, layout: str = "auto", silver: bool = False, n_folds: int = 5,
                       seed: int = 0) -> list[dict]:
    """The annotated frames (one item per mask file), sizes of image and mask checked."""
    frames = read_frames(root, layout, silver, n_folds, seed)
    return check_training_items(frames, root, ("image", "label"), "annotated frames (segmentation masks)")


def _frame_name(entry: dict) -> str:
    """The frame's name, also for an item named after one annotated slice (`01_t003_z005`)."""
    if "sequence" in entry and "frame" in entry:
        return f"{entry['sequence']}_t{int(entry['frame']):03d}"
    return str(entry["name"])


def pretext_split(entries: list[dict], train_items: Sequence[str] | None = None,
                  val_items: Sequence[str] | None = None, val_fold: int = 0, source: str | Path | None = None,
                  exclude_items: Sequence[str] | None = None, include_unlabelled: bool = True) -> dict[str, list[dict]]:
    """{"train", "val"} frames (images only) for a pretext.

    Item names may be frame names or annotated-item names (`01_t003_z005`); each stands for its frame.
    `exclude_items` (a study's test items) are left out first; without named items the rest is split by
    folds, so every frame, annotated or not, can train. With named `train_items` and
    `include_unlabelled`, every frame without a mask trains too (never a test item: tests are annotated).
    """
    frames: dict[str, dict] = {}
    alias: dict[str, str] = {}
    unlabelled: set[str] = set()
    for entry in entries:
        name = _frame_name(entry)
        frame = frames.setdefault(name, {k: v for k, v in entry.items() if k not in ("label", "label_slice",
                                                                                     "label_source")})
        frame["name"] = name
        alias[str(entry["name"])] = alias[name] = name
        if "label" not in entry:
            unlabelled.add(name)

    def named(names):
        return None if names is None else list(dict.fromkeys(alias.get(str(n), str(n)) for n in names))

    excluded = set(named(exclude_items) or ())
    split = split_items(list(frames.values()), named(train_items), named(val_items), val_fold, source, excluded)
    if include_unlabelled and train_items is not None:
        chosen = {frame["name"] for frame in split["train"]}
        split["train"] += [frames[name] for name in sorted(unlabelled - chosen - excluded)]
    return split


# ---------------------------------------------------------------- stacks and slices

@lru_cache(maxsize=4)
def _cached_stack(path: str, mtime: float, axes: str | None, median: int) -> np.ndarray:
    array, found = read_image(path, axes)
    check_finite(array, path)
    if "T" in found:
        if array.shape[found.index("T")] != 1:
            raise InputError(f"image has a time axis of {array.shape[found.index('T')]} frames (axes '{found}'); "
                             "give one frame per file", path)
        array, found = np.take(array, 0, axis=found.index("T")), found.replace("T", "")
    stack, found = to_channel_first(array, found, dtype=np.float32)  # C first; RGBA alpha dropped
    # grey-level method: colour or multi-channel images are averaged over their channels
    stack = stack.mean(axis=0)
    if stack.ndim == 2:
        stack = stack[None]
    if median > 1:
        stack = ndimage.median_filter(stack, size=(1, median, median))
    low, high = float(stack.min()), float(stack.max())
    stack = (stack - low) / (high - low) if high > low else np.zeros_like(stack)
    stack = stack.astype(np.float32)
    stack.setflags(write=False)
    return stack


def read_stack(path: str | Path, axes: str | None = None, median: int = 3) -> np.ndarray:
    """(Z, H, W) float32 in [0, 1] (Z = 1 for 2D): median filter per slice, min-max over the stack.

    The last few stacks read are kept, so the per-slice items of one stack read its file once.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    return _cached_stack(str(path.absolute()), path.stat().st_mtime, axes, int(median))


def stack_labels(path: str | Path, z: int, label_axes: str | None = None) -> np.ndarray:
    """(H, W) labels of slice z: a 2D mask (of a 2D image, or a CTC single-slice mask) as it is, else slice z."""
    labels = read_labels(path, label_axes)
    if labels.ndim == 3:
        labels = labels[z]
    return labels


def expand_slices(entries: list[dict], which: str = "all", axes: str | None = None,
                  label_axes: str | None = None) -> list[dict]:
    """One item per slice to analyse: {"slice", "n_slices", "group_size", ...entry}.

    `which`: "all" slices, or the "labelled" ones (see the module doc). `group_size` counts the items of
    one entry, so writers know when all slices of an image are done.
    """
    if which not in ("all", "labelled"):
        raise ValueError(f"which must be 'all' or 'labelled', got {which!r}")
    items = []
    for entry in entries:
        depth = read_stack(entry["image"], axes).shape[0]
        if which == "all" or depth == 1:
            slices = list(range(depth))
        elif "label_slice" in entry:
            slices = [int(entry["label_slice"])]
        else:
            labels = read_labels(entry["label"], label_axes)
            if labels.ndim != 3:
                raise InputError(f"a 2D mask for a stack of {depth} slices must name its slice (man_seg_TTT_ZZZ)",
                                 entry["label"])
            slices = [z for z in range(depth) if labels[z].any()]
        for z in slices:
            if not 0 <= z < depth:
                raise InputError(f"annotated slice {z} lies outside the stack of {depth} slices", entry["label"])
            items.append({**entry, "slice": z, "n_slices": depth, "group_size": len(slices)})
    return items


def folder_items(folder: str | Path, axes: str | None = None) -> list[dict]:
    """Per-slice items of every image in a folder (2D images and 3D stacks), named by file stem."""
    from cellzoo.io import list_images

    entries = [{"image": str(path), "path": str(path), "name": stem} for stem, path in list_images(folder).items()]
    return expand_slices(entries, "all", axes)


class LoadContextd(MapTransform):
    """Slices z-1, z, z+1 of the item's stack as `image` (3, H, W) float32, and its `label` slice (1, H, W).

    The item gives the file under the image key and the slice under `slice_key` (0 for 2D images).
    """

    def __init__(self, keys: KeysCollection = "image", label_key: str | None = "label", slice_key: str = "slice",
                 axes: str | None = None, label_axes: str | None = None, median: int = 3,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.slice_key = label_key, slice_key
        self.axes, self.label_axes, self.median = axes, label_axes, int(median)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        z = int(d.get(self.slice_key, 0))
        for key in self.key_iterator(d):
            path = d[key]
            stack = read_stack(path, self.axes, self.median)
            if not 0 <= z < stack.shape[0]:
                raise InputError(f"slice {z} lies outside the stack of {stack.shape[0]} slices", path)
            neighbours = [max(z - 1, 0), z, min(z + 1, stack.shape[0] - 1)]
            d[key] = np.ascontiguousarray(stack[neighbours])
            if self.label_key and self.label_key in d:
                labels = stack_labels(d[self.label_key], z, self.label_axes).astype(np.int32)
                if labels.shape != stack.shape[1:]:
                    raise InputError(f"mask of shape {labels.shape} does not match the image's {stack.shape[1:]} "
                                     f"({Path(str(path)).name})", d[self.label_key])
                d[self.label_key] = labels[None]
        return d
