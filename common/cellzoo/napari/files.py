"""Open and save through cellzoo's readers and writers, for the widget and for napari's File menu (npe2).

Images keep their axes explicit: a layer holds YX, YXC (RGB) or a stack whose leading axes are sliders,
with the file's OME pixel size as the layer scale (µm) and in `metadata["physical_size_um"]`, which
saving writes back. Errors are cellzoo's one-line InputErrors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellzoo.errors import InputError

__all__ = ["get_reader", "layer_data", "open_image", "save_labels", "write_labels"]

READABLE = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".nii", ".nii.gz")


def layer_data(path: str | Path) -> tuple[np.ndarray, dict]:
    """The array and layer keywords of an image file: channels last when 3 or 4 (RGB), else sliders."""
    from cellzoo.io import read_image
    from cellzoo.io.physical import read_physical_size_um

    path = Path(path)
    array, axes = read_image(path)
    for letter in "TCZ":  # drop single-plane axes: a YX image stays YX
        if letter in axes and array.shape[axes.index(letter)] == 1 and len(axes) > 2:
            array = np.squeeze(array, axis=axes.index(letter))
            axes = axes.replace(letter, "")
    rgb = "C" in axes and array.shape[axes.index("C")] in (3, 4)
    if rgb:
        array = np.moveaxis(array, axes.index("C"), -1)
    size = read_physical_size_um(path)
    keywords = {"name": path.name.split(".")[0], "rgb": rgb, "metadata": {"axes": axes, "source": str(path)}}
    if size is not None:
        spatial = array.ndim - (1 if rgb else 0)
        keywords["scale"] = (1.0,) * (spatial - 2) + tuple(size)
        keywords["metadata"]["physical_size_um"] = tuple(size)
    return array, keywords


def open_image(viewer, path: str | Path):
    """Add the image at `path` to `viewer` as an Image layer; returns the layer."""
    array, keywords = layer_data(path)
    return viewer.add_image(array, **keywords)


def save_labels(layer, path: str | Path) -> Path:
    """Write a Labels layer as OME-TIFF (uint16/uint32), with its pixel size when it overlays a calibrated image."""
    from cellzoo.io import write_ome_tiff
    from cellzoo.io.images import as_label_dtype

    labels = np.asarray(layer.data)
    if labels.ndim not in (2, 3):
        raise InputError(f"labels must be YX or ZYX, got shape {labels.shape}", path)
    size = None
    if layer.metadata.get("physical_size_um") or any(float(s) != 1.0 for s in layer.scale):
        size = tuple(float(s) for s in layer.scale[-labels.ndim:])
    return write_ome_tiff(path, as_label_dtype(labels), "YX" if labels.ndim == 2 else "ZYX", size)


# ---- npe2 contributions (napari.yaml) ----
def get_reader(path):
    """napari reader hook: a function giving the layer data of cellzoo-readable files, else None."""
    if isinstance(path, list) or not str(path).lower().endswith(READABLE):
        return None

    def read(path_):
        array, keywords = layer_data(path_)
        return [(array, keywords, "image")]

    return read


def write_labels(path: str, data, meta: dict) -> list[str]:
    """napari writer hook for one Labels layer."""
    from types import SimpleNamespace

    layer = SimpleNamespace(data=data, scale=meta.get("scale", (1.0, 1.0)), metadata=meta.get("metadata") or {})
    return [str(save_labels(layer, path))]
