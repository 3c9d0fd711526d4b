"""One in-memory image through a bundle's inference config: written where the config reads it, read back.

`write_input(bundle, image, folder)` writes a 2D image (YX, or YXC) in the layout the bundle's inference
reads (a folder of images; ISL's field with its one fluorescence plane; UNETR's LightMyCells study), as the
item `ITEM`; `read_output(bundle, out)` reads what the inference wrote for it as a `Prediction`: instance
labels (MEDIAR, CUPre, ISL), boxes with scores (PMC) or a stain image (UNETR). The napari widget
(cellzoo.interactive) and region-by-region prediction of large images (cellzoo.inference.streaming) both
go through these, so they run the bundles' own configs unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError

__all__ = ["ITEM", "Prediction", "has_tta", "plane", "read_output", "write_input"]

ITEM = "image"        # the item name a single predicted image gets


@dataclass
class Prediction:
    """What a bundle predicted for one image; exactly one of labels / boxes / image is set."""

    bundle: str
    labels: np.ndarray | None = None          # YX instance labels
    boxes: np.ndarray | None = None           # (n, 4) y0, x0, y1, x1 in pixels
    scores: np.ndarray | None = None          # (n,) per box
    image: np.ndarray | None = None           # YX predicted stain
    seconds: float = 0.0

    @property
    def kind(self) -> str:
        return "labels" if self.labels is not None else "boxes" if self.boxes is not None else "image"

    @property
    def count(self) -> int:
        """Cells found: instances or boxes (0 for a stain image)."""
        if self.labels is not None:
            return int(len(np.unique(self.labels[self.labels > 0])))
        return 0 if self.boxes is None else int(len(self.boxes))

    def cell_table(self, image: np.ndarray | None = None, spacing=None) -> list[dict]:
        """One row per cell: cellzoo's measurements for labels, centre / box / score for boxes."""
        if self.labels is not None:
            from cellzoo.postprocess.measure import measure_cells

            channel_axis = -1 if image is not None and np.asarray(image).ndim == self.labels.ndim + 1 else None
            return measure_cells(self.labels, image, channel_axis=channel_axis, spacing=spacing)
        if self.boxes is None:
            return []
        return [{"label": k + 1, "centroid_y": (y0 + y1) / 2, "centroid_x": (x0 + x1) / 2, "bbox_min_y": y0,
                 "bbox_min_x": x0, "bbox_max_y": y1, "bbox_max_x": x1, "score": float(s)}
                for k, ((y0, x0, y1, x1), s) in enumerate(zip(self.boxes.tolist(), self.scores))]


def plane(image: np.ndarray) -> np.ndarray:
    """The grey YX plane of a YX or YXC image (what the single-plane layouts store)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return image[..., :3].mean(axis=-1).astype(np.float32)
    if image.ndim != 2:
        raise InputError(f"a 2D image (YX, or YXC with 3-4 channels) is needed, got shape {image.shape}: choose "
                         "one plane of a stack")
    return image


def write_input(bundle: str, image: np.ndarray, folder: Path) -> Path:
    """Write `image` where the bundle's inference reads it; returns the input folder to predict on."""
    from cellzoo.io import write_image
    from cellzoo.io.layouts import write_labelfree_field, write_lightmycells_image

    folder = Path(folder)
    if bundle == "isl_segmentation":  # a field with its one fluorescence plane (the shipped nuclei model's input)
        write_labelfree_field(folder, ITEM, {"FLUO": plane(image)})
    elif bundle == "unetr_lightmycells":  # a LightMyCells study with one label-free plane
        write_lightmycells_image(folder, "Study_1", ITEM, "BF", [plane(image)], {})
    else:  # MEDIAR, CUPre, PMC: a folder of images
        image = np.asarray(image)
        write_image(folder / f"{ITEM}.tif", image, "YXC" if image.ndim == 3 else "YX")
    return folder


def read_output(bundle: str, out: Path) -> Prediction:
    """The prediction the bundle's inference wrote for the one image under `out`."""
    from cellzoo.io import read_image, read_labels

    out = Path(out)
    if bundle == "pmc_detection":
        document = json.loads(_one(out, f"coco/{ITEM}*.json").read_text())
        boxes = np.array([[y, x, y + h, x + w] for x, y, w, h in (a["bbox"] for a in document["annotations"])],
                         dtype=np.float32).reshape(-1, 4)
        scores = np.array([a.get("score", 1.0) for a in document["annotations"]], dtype=np.float32)
        return Prediction(bundle, boxes=boxes, scores=scores)
    if bundle == "unetr_lightmycells":
        return Prediction(bundle, image=np.squeeze(read_image(_one(out, "Study_1/*.ome.tiff"))[0]))
    return Prediction(bundle, labels=read_labels(_one(out, f"labels/{ITEM}*_label.tif*")))


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise RuntimeError(f"the prediction wrote no {pattern} under {folder}")
    return found[0]


def has_tta(bundle: str) -> bool:
    """Whether the bundle's inference config has a `tta` switch."""
    import yaml

    from cellzoo.bundles import bundle_path

    return "tta" in (yaml.safe_load((bundle_path(bundle) / "configs" / "inference.yaml").read_text()) or {})
