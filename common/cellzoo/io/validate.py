"""Checks on user-supplied images and label images; each failure is one InputError line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.images import image_size, read_image


def check_dir(path: str | Path) -> Path:
    """Return the path of an existing folder, else raise InputError."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("folder not found" if not path.exists() else "not a folder", path)
    return path


def check_finite(array: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Raise InputError if the array has NaN or inf pixels; return it unchanged."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        raise InputError("contains NaN or inf pixels", path)
    return array


def check_label_image(
    array: np.ndarray,
    path: str | Path | None = None,
    ndim: tuple[int, ...] | None = (2, 3),
    allow_empty: bool = False,
    allow_float: bool = False,
) -> np.ndarray:
    """The one check of an instance label image: integer ids >= 0, allowed ndim, not empty; returns it.

    `path` names the image in errors (a file, or a role such as "gt"). `allow_empty` is for predictions:
    a model may rightly find no cell, ground truth may not be empty. `allow_float` accepts float arrays
    whose values are all whole numbers (labels that went through a float pipeline, e.g. an engine's
    output) and returns them as int64; label *files* must be integer-typed. Booleans become uint8.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if allow_float and np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("label image contains NaN or inf", path)
        if np.any(array != np.round(array)):
            raise InputError("label image has non-integer values", path)
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"label image is not integer-typed ({array.dtype})", path)
    if ndim is not None and array.ndim not in ndim:
        wanted = " or ".join(f"{n}D" for n in ndim)
        raise InputError(f"expected a {wanted} label image, got shape {array.shape}", path)
    if array.size and array.min() < 0:
        raise InputError(f"label image has negative labels (min {array.min()})", path)
    if not allow_empty and not array.any():
        raise InputError("label image is empty (no labelled pixels)", path)
    return array


def check_same_shape(
    a: np.ndarray, b: np.ndarray, path_a: str | Path | None = None, path_b: str | Path | None = None
) -> None:
    """Raise InputError naming both files when two arrays differ in shape."""
    shape_a, shape_b = np.shape(a), np.shape(b)
    if shape_a != shape_b:
        raise InputError(f"shape {shape_a} does not match shape {shape_b} of {path_b}", path_a)


def read_labels(path: str | Path, axes: str | None = None, allow_empty: bool = False) -> np.ndarray:
    """Read an instance label image as a checked YX or ZYX integer array."""
    array, found = read_image(path, axes=axes)
    for letter in "TC":
        if letter in found and array.shape[found.index(letter)] == 1:
            array = np.squeeze(array, axis=found.index(letter))
            found = found.replace(letter, "")
    if "T" in found or "C" in found:
        raise InputError(f"label image must be YX or ZYX, got axes '{found}' with shape {array.shape}", path)
    return check_label_image(array, path, allow_empty=allow_empty)


def check_training_items(entries: list[dict], source: str | Path, keys: tuple[str, ...] = ("image", "label"),
                         what: str = "labelled items to train on") -> list[dict]:
    """The entries that have every key in `keys`, after checking that their files share one image size.

    Run when a bundle builds its datalist, so a missing label set or a label of another size than its
    image stops the run before any training step, naming the files. Sizes come from file headers
    (`image_size`); a file whose header does not say is checked when it is read.
    """
    usable = [entry for entry in entries if all(key in entry for key in keys)]
    if not usable:
        raise InputError(f"no {what}: none of the {len(entries)} item(s) found has "
                         f"{' and '.join(repr(k) for k in keys[1:])} files", source)
    for entry in usable:
        files = [path for key in keys for path in ([entry[key]] if isinstance(entry[key], (str, Path)) else entry[key])]
        sizes = {path: image_size(path) for path in files}
        known = {size for size in sizes.values() if size is not None}
        if len(known) > 1:
            listing = ", ".join(f"{Path(p).name} {s[0]}x{s[1]}" for p, s in sizes.items() if s is not None)
            raise InputError(f"the files of one item differ in size ({listing})", files[0])
    return usable
