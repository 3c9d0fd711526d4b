"""Per-cell measurement table from an instance label image (skimage regionprops), and its CSV writer."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

from cellzoo.errors import InputError
from cellzoo.io import check_finite, check_label_image, read_image, read_labels, write_atomically

#: Columns of a 2D (YX) table, before the mean_intensity_<c> columns (one per image channel).
MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "label", "centroid_y", "centroid_x", "area",
    "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x",
    "perimeter", "eccentricity", "solidity",
)
#: Columns of a 3D (ZYX) table: skimage defines no perimeter or eccentricity in 3D (it raises
#: NotImplementedError), so those are left out; area is the volume in voxels; solidity works in 3D.
MEASUREMENT_COLUMNS_3D: tuple[str, ...] = (
    "label", "centroid_z", "centroid_y", "centroid_x", "area",
    "bbox_min_z", "bbox_min_y", "bbox_min_x", "bbox_max_z", "bbox_max_y", "bbox_max_x",
    "solidity",
)
# Both column lists are subsequences of this order, so 2D and 3D tables sort the same way.
_CANONICAL_ORDER = (
    "label", "centroid_z", "centroid_y", "centroid_x", "area",
    "bbox_min_z", "bbox_min_y", "bbox_min_x", "bbox_max_z", "bbox_max_y", "bbox_max_x",
    "perimeter", "eccentricity", "solidity",
)
_INTEGER_COLUMNS = {"label"} | {c for c in MEASUREMENT_COLUMNS_3D if c.startswith("bbox_")}
_INTENSITY_PREFIX = "mean_intensity_"


def measure_cells(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    channel_axis: int | None = None,
    spacing: Sequence[float] | None = None,
) -> list[dict]:
    """One row per cell (label > 0), sorted by label; see MEASUREMENT_COLUMNS and docs/inference.md.

    bbox_max_* are exclusive (slice convention) and in pixels. With `spacing`, centroid, area and
    perimeter are in physical units; perimeter is NaN for anisotropic 2D spacing (skimage only supports
    isotropic). `image` is YX / ZYX, or has channels on `channel_axis` (e.g. -1 for YXC, 0 for CYX).
    """
    labels = check_label_image(labels, "labels", allow_empty=True)
    intensity = None if image is None else _channels_last(np.asarray(image), labels.shape, channel_axis)
    spatial = "zyx"[-labels.ndim:]
    properties = ["label", "centroid", "area", "bbox", "solidity"]
    if labels.ndim == 2 and _perimeter_defined(spacing):
        properties.append("perimeter")
    if labels.ndim == 2:
        properties.append("eccentricity")
    if intensity is not None:
        properties.append("intensity_mean")
    table = regionprops_table(labels, intensity, properties=properties,
                              spacing=None if spacing is None else tuple(spacing))
    columns = _rename(table, spatial)
    if labels.ndim == 2 and "perimeter" not in columns:
        columns["perimeter"] = np.full(len(columns["label"]), np.nan)
    return _rows(columns)


def _channels_last(image: np.ndarray, shape: tuple[int, ...], channel_axis: int | None) -> np.ndarray:
    """Image with one trailing channel axis (added for grey images, so columns are always per channel)."""
    image = image[..., np.newaxis] if channel_axis is None else np.moveaxis(image, channel_axis, -1)
    if image.shape[:-1] != shape:
        raise InputError(
            f"image shape {image.shape[:-1]} (channels moved last) does not match labels shape {shape}; "
            "pass channel_axis for images with channels"
        )
    return image


def _perimeter_defined(spacing: Sequence[float] | None) -> bool:
    """skimage's perimeter raises for anisotropic spacing."""
    return spacing is None or len(set(float(s) for s in spacing)) == 1


def _rename(table: dict[str, np.ndarray], spatial: str) -> dict[str, np.ndarray]:
    """Map skimage's 'centroid-0', 'bbox-3', 'intensity_mean-1' keys to cellzoo column names."""
    names = {"label": "label", "area": "area", "perimeter": "perimeter",
             "eccentricity": "eccentricity", "solidity": "solidity"}
    ndim = len(spatial)
    for axis, letter in enumerate(spatial):
        names[f"centroid-{axis}"] = f"centroid_{letter}"
        names[f"bbox-{axis}"] = f"bbox_min_{letter}"
        names[f"bbox-{axis + ndim}"] = f"bbox_max_{letter}"
    renamed = {}
    for key, values in table.items():
        if key.startswith("intensity_mean-"):
            renamed[_INTENSITY_PREFIX + key.split("-")[1]] = values
        else:
            renamed[names[key]] = values
    return renamed


def _rows(columns: dict[str, np.ndarray]) -> list[dict]:
    """Column arrays -> one dict per cell with plain Python int/float values, in canonical column order."""
    order = column_order(columns)
    rows = []
    for i in range(len(columns["label"])):
        rows.append({c: int(columns[c][i]) if c in _INTEGER_COLUMNS else float(columns[c][i]) for c in order})
    return rows


def column_order(keys: Iterable[str]) -> list[str]:
    """Stable column order: known columns first, then mean_intensity_<c> by channel, then others sorted."""
    keys = set(keys)
    known = [c for c in _CANONICAL_ORDER if c in keys]
    intensity = sorted((k for k in keys if _is_intensity(k)), key=lambda k: int(k[len(_INTENSITY_PREFIX):]))
    rest = sorted(keys - set(known) - set(intensity))
    return known + intensity + rest


def _is_intensity(key: str) -> bool:
    return key.startswith(_INTENSITY_PREFIX) and key[len(_INTENSITY_PREFIX):].isdigit()


def write_measurements_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows as CSV with a header in column_order, atomically (readers never see half a table)."""
    columns = column_order(k for row in rows for k in row) if rows else list(MEASUREMENT_COLUMNS)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    return write_atomically(path, write)


def measure_files(image_path: str | Path, labels_path: str | Path, out_csv: str | Path) -> list[dict]:
    """Measure the cells of a label file on its image file and write the CSV table."""
    labels = read_labels(labels_path)
    image, axes = read_image(image_path)
    check_finite(image, image_path)
    channel_axis = axes.index("C") if "C" in axes else None
    spatial = tuple(size for axis, size in enumerate(image.shape) if axis != channel_axis)
    if spatial != labels.shape:
        raise InputError(
            f"image shape {image.shape} (axes {axes}) does not match label shape {labels.shape} of {labels_path}",
            image_path,
        )
    rows = measure_cells(labels, image, channel_axis=channel_axis)
    write_measurements_csv(rows, out_csv)
    return rows
