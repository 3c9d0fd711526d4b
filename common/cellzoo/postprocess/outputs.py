"""The per-image files a segmentation run writes: label TIFF, per-cell CSV and outline overlay."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cellzoo.io import write_tiff
from cellzoo.postprocess.measure import measure_cells, write_measurements_csv
from cellzoo.postprocess.overlay import write_overlay_png

logger = logging.getLogger(__name__)


def write_cell_outputs(stem: str, labels: np.ndarray, image: np.ndarray, output_dir: str | Path,
                       write_extras: bool = True) -> Path:
    """labels/<stem>_label.tiff and, with extras, measurements/<stem>_cells.csv and overlays/<stem>_overlay.png.

    `labels` is (H, W) instance labels, `image` the raw (C, H, W) image the cells are measured on. The label
    name follows the NeurIPS CellSeg convention, so `cellzoo evaluate instance` pairs it with ground truth.
    """
    output_dir = Path(output_dir)
    labels = np.asarray(labels)
    if (output_dir / "labels" / f"{stem}_label.tiff").exists():
        logger.warning("replacing the earlier predictions for %s in %s", stem, output_dir)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    label_path = write_tiff(output_dir / "labels" / f"{stem}_label.tiff", labels.astype(dtype), "YX")
    if write_extras:
        image = np.asarray(image)
        rows = measure_cells(labels, image, channel_axis=0)
        write_measurements_csv(rows, output_dir / "measurements" / f"{stem}_cells.csv")
        display = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        write_overlay_png(output_dir / "overlays" / f"{stem}_overlay.png", display, labels)
    return label_path
